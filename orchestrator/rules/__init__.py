"""Pure decisions and vocabulary: no database, Docker, network, threads or clock."""
