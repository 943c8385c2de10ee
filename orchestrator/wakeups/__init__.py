"""In-process wake-ups (the hub) and their PostgreSQL relay between processes."""
