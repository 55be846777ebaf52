"""The fault proxy against a real echo server: bytes pass unchanged, latency delays them, a reset
aborts live connections and refuses new ones for a while, a black hole holds bytes back until it
ends."""

from __future__ import annotations

import socket
import socketserver
import threading
import time
from collections.abc import Iterator

import pytest

from cluster.chaos.proxy import FaultProxy


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        while data := self.request.recv(65536):
            self.request.sendall(data)


@pytest.fixture
def proxy() -> Iterator[FaultProxy]:
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Echo)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    proxy = FaultProxy("127.0.0.1", server.server_address[1]).start()
    try:
        yield proxy
    finally:
        proxy.close()
        server.shutdown()
        server.server_close()


def _connect(proxy: FaultProxy) -> socket.socket:
    return socket.create_connection(("127.0.0.1", proxy.port), timeout=5)


def _echo(conn: socket.socket, data: bytes) -> bytes:
    conn.sendall(data)
    got = b""
    while len(got) < len(data):
        chunk = conn.recv(65536)
        if not chunk:
            break
        got += chunk
    return got


def test_bytes_pass_unchanged(proxy: FaultProxy) -> None:
    payload = bytes(range(256)) * 1000
    with _connect(proxy) as conn:
        assert _echo(conn, payload) == payload


def test_latency_delays_each_way(proxy: FaultProxy) -> None:
    with _connect(proxy) as conn:
        _echo(conn, b"warm")
        proxy.set_latency(0.2)
        started = time.monotonic()
        assert _echo(conn, b"slow") == b"slow"
        assert time.monotonic() - started >= 0.4  # 0.2 s there and 0.2 s back
        proxy.set_latency(0)
        started = time.monotonic()
        _echo(conn, b"fast")
        assert time.monotonic() - started < 0.2


def test_reset_aborts_live_connections_and_refuses_new_ones(proxy: FaultProxy) -> None:
    conn = _connect(proxy)
    assert _echo(conn, b"hello") == b"hello"
    assert proxy.reset(refuse_for_s=1.0) == 1
    with pytest.raises(OSError):
        conn.sendall(b"after the reset")
        if not conn.recv(10):
            raise ConnectionResetError("closed")
    conn.close()
    # The proxy accepts and aborts at once: the reset can reach the client while it connects
    # (on a busy machine) or on its first read; either way the client gets an error.
    with pytest.raises(OSError):
        with _connect(proxy) as refused:
            refused.sendall(b"x")
            if not refused.recv(10):
                raise ConnectionResetError("closed")
    time.sleep(1.1)
    with _connect(proxy) as again:
        assert _echo(again, b"back") == b"back"


def test_black_hole_holds_bytes_until_it_ends(proxy: FaultProxy) -> None:
    with _connect(proxy) as conn:
        proxy.black_hole(1.0)
        conn.settimeout(0.5)
        conn.sendall(b"held")
        with pytest.raises(socket.timeout):
            conn.recv(10)
        conn.settimeout(5)
        got = b""
        while len(got) < 4:
            got += conn.recv(10)
        assert got == b"held"


def test_bad_fault_values_are_refused(proxy: FaultProxy) -> None:
    with pytest.raises(ValueError, match="latency"):
        proxy.set_latency(-1)
    with pytest.raises(ValueError, match="black hole"):
        proxy.black_hole(-1)
    assert proxy.latency_s == 0
