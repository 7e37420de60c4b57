"""The fault proxy against a local echo server: forwarding and each fault it injects."""

from __future__ import annotations

import socket
import socketserver
import threading
from collections.abc import Iterator

import pytest

from tests.faults.proxy import FaultProxy


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        try:
            while data := self.request.recv(65536):
                self.request.sendall(data)
        except ConnectionResetError:
            pass  # the reset tests cut the proxy's upstream connection on purpose


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


@pytest.fixture
def echo_port() -> Iterator[int]:
    server = _Server(("127.0.0.1", 0), _Echo)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


@pytest.fixture
def proxy(echo_port: int) -> Iterator[FaultProxy]:
    proxy = FaultProxy("127.0.0.1", echo_port).start()
    yield proxy
    proxy.stop()


def _connect(proxy: FaultProxy, timeout_s: float = 5.0) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", proxy.port), timeout=timeout_s)
    sock.settimeout(timeout_s)
    return sock


def _read_until_closed(sock: socket.socket) -> tuple[bytes, str]:
    """Read until the peer closes. Return the bytes and how it closed ("eof" or "reset")."""
    received = b""
    while True:
        try:
            data = sock.recv(65536)
        except ConnectionResetError:
            return received, "reset"
        if not data:
            return received, "eof"
        received += data


def test_proxy_forwards_both_directions(proxy: FaultProxy) -> None:
    with _connect(proxy) as sock:
        sock.sendall(b"hello")

        assert sock.recv(100) == b"hello"
    assert proxy.stats().accepted == 1


def test_latency_holds_back_each_chunk(proxy: FaultProxy) -> None:
    proxy.set_latency(0.8)
    with _connect(proxy) as sock:
        sock.sendall(b"late")
        sock.settimeout(0.3)
        with pytest.raises(TimeoutError):
            sock.recv(100)
        sock.settimeout(5)

        assert sock.recv(100) == b"late"


def test_blackhole_holds_data_until_heal(proxy: FaultProxy) -> None:
    with _connect(proxy) as sock:
        sock.sendall(b"before")
        assert sock.recv(100) == b"before"
        proxy.blackhole()
        sock.sendall(b"held")
        sock.settimeout(0.5)
        with pytest.raises(TimeoutError):
            sock.recv(100)

        proxy.heal()
        sock.settimeout(5)
        assert sock.recv(100) == b"held"


def test_blackhole_leaves_new_connection_unanswered(proxy: FaultProxy) -> None:
    proxy.blackhole()
    with _connect(proxy) as sock:
        sock.sendall(b"new")
        sock.settimeout(0.5)
        with pytest.raises(TimeoutError):
            sock.recv(100)

        proxy.heal()
        sock.settimeout(5)
        assert sock.recv(100) == b"new"


def test_reset_all_sends_rst(proxy: FaultProxy) -> None:
    with _connect(proxy) as sock:
        sock.sendall(b"ping")
        assert sock.recv(100) == b"ping"

        assert proxy.reset_all() == 1
        assert _read_until_closed(sock) == (b"", "reset")
    assert proxy.stats().resets == 1


def test_close_after_bytes_cuts_stream(proxy: FaultProxy) -> None:
    # 60 bytes go up and come back, and the limit of 100 bytes in total lets 40 of them back.
    proxy.close_after_bytes(100)
    with _connect(proxy) as sock:
        sock.sendall(b"x" * 60)

        received, closed_by = _read_until_closed(sock)
    assert (len(received), closed_by) == (40, "reset")
    assert proxy.stats().closed_after_bytes == 1


def test_close_after_bytes_spares_open_connections(proxy: FaultProxy) -> None:
    with _connect(proxy) as sock:
        sock.sendall(b"a")
        assert sock.recv(100) == b"a"
        proxy.close_after_bytes(10)
        proxy.connection_count()  # the limit is set once the proxy's loop ran this call
        sock.sendall(b"y" * 50)
        received = b""
        while len(received) < 50:
            received += sock.recv(100)

        assert received == b"y" * 50


def test_unreachable_upstream_resets_client() -> None:
    with socket.socket() as placeholder:
        placeholder.bind(("127.0.0.1", 0))
        closed_port = placeholder.getsockname()[1]
    proxy = FaultProxy("127.0.0.1", closed_port).start()
    try:
        with _connect(proxy) as sock:
            assert _read_until_closed(sock)[0] == b""
        assert proxy.stats().upstream_failures == 1
    finally:
        proxy.stop()
