"""One connection pool for a Unix-socket engine (docker-py kept one per URL)."""

from __future__ import annotations

from typing import Any

import docker
import docker.errors
from docker.transport.unixconn import UnixHTTPAdapter


class _SocketAdapter(UnixHTTPAdapter):
    """docker-py's Unix socket adapter with one connection pool for the socket.

    docker-py keys its pools by the whole URL, so every call about another container got a
    pool, and a connection, of its own, opened for that call and closed soon after. Every URL
    leads to the same socket, so one pool serves them all.
    """

    def get_connection(self, url: str, proxies: Any = None) -> Any:
        return super().get_connection("http+docker://localhost", proxies)


def pool_socket_connections(client: docker.DockerClient, pool_size: int) -> None:
    """Give a client of a Unix socket one pool of ``pool_size`` connections for all its calls,
    and spare it the proxy and ``.netrc`` lookups requests makes per request (no proxy or
    password applies to a socket)."""
    api = client.api
    adapter = api.get_adapter(api.base_url)
    if not isinstance(adapter, UnixHTTPAdapter):
        return
    pooled = _SocketAdapter(
        f"http+unix://{adapter.socket_path}", timeout=adapter.timeout, max_pool_size=pool_size
    )
    api.mount("http+docker://", pooled)
    adapter.close()
    api.trust_env = False
