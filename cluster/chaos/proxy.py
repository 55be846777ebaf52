"""A small TCP fault proxy: listens on 127.0.0.1 and forwards every connection to one target,
with faults switched on and off while traffic flows.

    proxy = FaultProxy("127.0.0.1", 5432).start()    # proxy.port: point the client here
    proxy.set_latency(0.2)      # every chunk, either way, waits 200 ms more
    proxy.reset(refuse_for_s=2) # live connections are aborted (RST); new ones refused for 2 s
    proxy.black_hole(5)         # for 5 s connections are accepted and nothing is forwarded
    proxy.close()

Guarantees: bytes are never reordered, dropped or altered on a connection that stays open (a
black hole holds them back, as a partition that heals does to TCP); a reset aborts both sides
of every live connection at once. It runs on its own thread and event loop, so a blocking
caller controls it; every control call is thread-safe and returns once it took effect.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import threading
import time
from concurrent.futures import Future
from typing import Any

CHUNK_BYTES = 65536
STEP_S = 0.02


class FaultProxy:
    """One listening port forwarding to (`target_host`, `target_port`)."""

    def __init__(self, target_host: str, target_port: int, listen_port: int = 0) -> None:
        self.target = (target_host, target_port)
        self._listen_port = listen_port
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True,
                                        name=f"fault-proxy-{target_port}")
        self._server: asyncio.base_events.Server | None = None
        self._links: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        self.latency_s = 0.0
        self._refuse_until = 0.0
        self._black_hole_until = 0.0
        self.accepted = 0
        self.refused = 0
        self.aborted = 0

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the proxy is not started")
        return int(self._server.sockets[0].getsockname()[1])

    def start(self) -> FaultProxy:
        self._thread.start()
        self._call(self._listen())
        return self

    def close(self) -> None:
        """Stop listening and abort every live connection."""
        if not self._thread.is_alive():
            return
        self._call(self._shutdown())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)

    def set_latency(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError(f"latency must be >= 0 seconds, not {seconds}")
        self.latency_s = seconds

    def reset(self, refuse_for_s: float = 0.0) -> int:
        """Abort every live connection, and refuse new ones for `refuse_for_s`; how many were
        aborted."""
        if refuse_for_s < 0:
            raise ValueError(f"refuse_for_s must be >= 0, not {refuse_for_s}")
        self._refuse_until = time.monotonic() + refuse_for_s
        return int(self._call(self._abort_all()))

    def black_hole(self, seconds: float) -> None:
        """For `seconds`, accept connections but forward nothing either way."""
        if seconds < 0:
            raise ValueError(f"black hole must last >= 0 seconds, not {seconds}")
        self._black_hole_until = time.monotonic() + seconds

    def heal(self) -> None:
        """End every fault now: no latency, no refusals, no black hole."""
        self.latency_s = 0.0
        self._refuse_until = 0.0
        self._black_hole_until = 0.0

    @property
    def live_connections(self) -> int:
        return len(self._links)

    # ------------------------------------------------------------- on the proxy's loop

    def _call(self, coroutine: Any) -> Any:
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        return future.result(timeout=10)

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self._listen_port)

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        await self._abort_all()

    async def _abort_all(self) -> int:
        links = list(self._links)
        for client, upstream in links:
            _abort(client)
            _abort(upstream)
        self._links.clear()
        self.aborted += len(links)
        return len(links)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if time.monotonic() < self._refuse_until:
            self.refused += 1
            _abort(writer)
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            self.refused += 1
            _abort(writer)
            return
        self.accepted += 1
        link = (writer, up_writer)
        self._links.add(link)
        try:
            await asyncio.gather(self._pump(reader, up_writer), self._pump(up_reader, writer))
        finally:
            self._links.discard(link)
            for side in link:
                side.close()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                data = await reader.read(CHUNK_BYTES)
                if not data:
                    break
                await self._gate()
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            if not writer.is_closing():
                writer.close()

    async def _gate(self) -> None:
        """Hold a chunk while a black hole lasts, then for the added latency."""
        while (remaining := self._black_hole_until - time.monotonic()) > 0:
            await asyncio.sleep(min(STEP_S, remaining))
        if self.latency_s:
            await asyncio.sleep(self.latency_s)


def _abort(writer: asyncio.StreamWriter) -> None:
    """Close with a reset (RST), as a crashed peer or a cut link does."""
    transport = writer.transport
    sock = transport.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
    transport.abort()
