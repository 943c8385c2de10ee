"""Live streams of a process: one shared reader per followed job (the fan-out) and the guard
that caps each token's streams and ends them when the token no longer may read."""
