"""The drop-in APIs (SaladCloud, Daestro, Quedup) with their own clients' shapes."""
