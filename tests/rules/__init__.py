"""Pure rules: no database, Docker or network; fast."""
