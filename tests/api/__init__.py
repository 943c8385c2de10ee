"""The HTTP API of a live server: input, limits, tokens, secrets, webhooks."""
