"""The API server's background loops: scheduler, HTTP targets, webhook sender."""
