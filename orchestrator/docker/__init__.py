"""The only package that talks to Docker: the engine facade and log-stream decoding."""
