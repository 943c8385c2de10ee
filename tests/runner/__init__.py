"""The runner on a real Docker engine: containers, restarts, crashes, hosts."""
