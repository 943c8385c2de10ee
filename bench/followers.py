"""Many followers of one live stream, in a process of their own (a helper of bench/streams.py).

    python bench/followers.py URL PATH TOKEN COUNT MARKER

Opens COUNT connections to ``GET PATH`` (asyncio protocols, no HTTP library: a follower costs
next to no CPU, so the client disturbs the machine it measures as little as it can), prints
``connected <n>`` once every one has its 200 response head, and counts MARKER in each body
until SIGTERM; then prints one JSON line: how many answered 200, how many closed early, and
the markers each counted (min, max, total) with the seconds they were counted over.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time
from urllib.parse import urlsplit

# Connections opened at once while ramping up (the server's listen backlog is larger).
RAMP_BATCH = 100


class Follower(asyncio.Protocol):
    """One streaming GET: its status and how many markers its body held."""

    def __init__(self, request: bytes, marker: bytes, ready: asyncio.Event) -> None:
        self.request = request
        self.marker = marker
        self.ready = ready
        self.status = 0
        self.count = 0
        self.closed = False
        self._head = b""
        self._tail = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        if not self.status:
            self._head += data
            end = self._head.find(b"\r\n\r\n")
            if end < 0:
                return
            self.status = int(self._head.split(b" ", 2)[1])
            data = self._head[end + 4 :]
            self._head = b""
            self.ready.set()
        # A marker split between two reads is counted once: in tail + data, not in the tail.
        window = self._tail + data
        self.count += window.count(self.marker) - self._tail.count(self.marker)
        self._tail = window[-(len(self.marker) - 1) :]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.ready.set()


async def main(url: str, path: str, token: str, count: int, marker: str) -> None:
    """Open the followers, report, count until SIGTERM, report again."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    request = (
        f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: Bearer {token}\r\n"
        "Accept: */*\r\n\r\n"
    ).encode()
    loop = asyncio.get_running_loop()
    followers: list[Follower] = []
    transports = []
    for start in range(0, count, RAMP_BATCH):
        batch = []
        for _ in range(min(RAMP_BATCH, count - start)):
            follower = Follower(request, marker.encode(), asyncio.Event())
            batch.append(follower)
            transports.append(
                (await loop.create_connection(lambda f=follower: f, host, port))[0]  # type: ignore[misc]
            )
        await asyncio.gather(*(f.ready.wait() for f in batch))
        followers.extend(batch)
    print(f"connected {sum(f.status == 200 for f in followers)}", flush=True)
    for follower in followers:
        follower.count = 0
    began = time.monotonic()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    seconds = time.monotonic() - began
    counts = [f.count for f in followers]
    for transport in transports:
        transport.close()
    print(
        json.dumps(
            {
                "ok": sum(f.status == 200 for f in followers),
                "closed_early": sum(f.closed for f in followers),
                "min": min(counts),
                "max": max(counts),
                "total": sum(counts),
                "seconds": seconds,
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]))
