"""The database (engine, models, migrations) and the secret box; below services."""
