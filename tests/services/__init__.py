"""The database and the services over it (SQLite and PostgreSQL)."""
