"""A TCP fault proxy for tests: latency, blackhole, connection resets, close after N bytes.

The proxy listens on a loopback port and forwards every connection to one upstream
address. It runs an asyncio loop in a daemon thread, and the test thread changes its
faults at any time through thread-safe methods:

- ``set_latency(seconds, jitter_s)`` delays every chunk, in both directions, by that much.
  Each chunk waits for its own deadline, so latency does not add up along a stream.
- ``blackhole()`` stops forwarding in both directions and leaves new connections
  unanswered, as a network partition with TCP retransmission would. ``heal()`` delivers
  what was held back, in order, unless a side closed the connection meanwhile.
- ``reset_all()`` ends every open connection with a TCP RST (SO_LINGER 0).
- ``close_after_bytes(n)`` makes each connection opened afterwards forward ``n`` bytes in
  total and then end with a RST, which cuts protocol frames in half.

toxiproxy offers the same faults but cannot be installed on the development machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
import struct
import threading
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

logger = logging.getLogger(__name__)

CHUNK_BYTES = 65536


@dataclass
class ProxyStats:
    """Counters since the proxy started, read with ``FaultProxy.stats()``."""

    accepted: int = 0
    upstream_failures: int = 0
    resets: int = 0
    closed_after_bytes: int = 0
    bytes_forwarded: int = 0


@dataclass(eq=False)
class _Connection:
    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter | None = None
    forwarded: int = 0
    limit: int | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    closed: bool = False


def _abort_with_rst(writer: asyncio.StreamWriter | None) -> None:
    """Close a socket so that the peer receives a TCP RST instead of a FIN."""
    if writer is None or writer.transport.is_closing():
        return
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class FaultProxy:
    """Forward ``127.0.0.1:port`` to ``upstream_host:upstream_port`` with injectable faults."""

    def __init__(self, upstream_host: str, upstream_port: int, listen_port: int = 0) -> None:
        self.upstream = (upstream_host, upstream_port)
        self._listen_port = listen_port
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fault-proxy", daemon=True)
        self._server: asyncio.base_events.Server | None = None
        self._connections: set[_Connection] = set()
        self._open = asyncio.Event()
        self._latency_s = 0.0
        self._jitter_s = 0.0
        self._limit: int | None = None
        self._stats = ProxyStats()
        self._random = random.Random(7)

    # Lifecycle

    def start(self) -> FaultProxy:
        """Start listening; ``port`` is known once this returns."""
        self._thread.start()
        self._call(self._start())
        logger.info("Fault proxy listening on 127.0.0.1:%d, forwarding to %s:%d",
                    self.port, *self.upstream)
        return self

    async def _start(self) -> None:
        self._open.set()
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self._listen_port,
                                                  reuse_address=True)

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("The fault proxy is not started; call start() first.")
        return self._server.sockets[0].getsockname()[1]

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        """Close the listener and every connection, then end the loop thread."""
        if not self._thread.is_alive():
            return
        self._call(self._stop())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    async def _stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for connection in list(self._connections):
            self._end(connection, rst=False)
        self._open.set()

    def _call(self, coroutine: Coroutine[Any, Any, Any], timeout_s: float = 10.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout_s)

    # Faults, callable from any thread

    def set_latency(self, seconds: float, jitter_s: float = 0.0) -> None:
        """Delay each forwarded chunk by ``seconds`` plus a uniform 0 to ``jitter_s``."""
        self._loop.call_soon_threadsafe(self._set_latency, seconds, jitter_s)

    def _set_latency(self, seconds: float, jitter_s: float) -> None:
        self._latency_s, self._jitter_s = seconds, jitter_s

    def blackhole(self) -> None:
        """Hold every byte in both directions, and new connections, until ``heal``."""
        self._loop.call_soon_threadsafe(self._open.clear)

    def heal(self) -> None:
        """End a blackhole and forward what it held back."""
        self._loop.call_soon_threadsafe(self._open.set)

    def reset_all(self) -> int:
        """End every open connection with a RST and return how many were open."""
        return self._call(self._reset_all())

    async def _reset_all(self) -> int:
        connections = list(self._connections)
        for connection in connections:
            self._end(connection, rst=True)
        self._stats.resets += len(connections)
        return len(connections)

    def close_after_bytes(self, limit: int | None) -> None:
        """Cut each connection opened from now on after ``limit`` bytes. None turns the limit off."""
        self._loop.call_soon_threadsafe(setattr, self, "_limit", limit)

    def clear(self) -> None:
        """Remove every fault: no latency, no blackhole, no byte limit for new connections."""
        self.set_latency(0.0)
        self.close_after_bytes(None)
        self.heal()

    def stats(self) -> ProxyStats:
        return self._call(self._copy_stats())

    async def _copy_stats(self) -> ProxyStats:
        return ProxyStats(**self._stats.__dict__)

    def connection_count(self) -> int:
        return self._call(self._count())

    async def _count(self) -> int:
        return len(self._connections)

    # Forwarding

    async def _serve(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        connection = _Connection(client_writer, limit=self._limit)
        self._connections.add(connection)
        self._stats.accepted += 1
        try:
            await self._open.wait()
            if connection.closed:
                return
            try:
                upstream_reader, upstream_writer = await asyncio.open_connection(*self.upstream)
            except OSError as exc:
                self._stats.upstream_failures += 1
                logger.debug("Fault proxy cannot reach %s:%d: %s", *self.upstream, exc)
                self._end(connection, rst=True)
                return
            connection.upstream = upstream_writer
            if connection.closed:
                _abort_with_rst(upstream_writer)
                return
            connection.tasks = [
                asyncio.create_task(self._pump(connection, client_reader, upstream_writer)),
                asyncio.create_task(self._pump(connection, upstream_reader, client_writer)),
            ]
            await asyncio.gather(*connection.tasks, return_exceptions=True)
        finally:
            self._end(connection, rst=False)

    async def _pump(self, connection: _Connection, reader: asyncio.StreamReader,
                    writer: asyncio.StreamWriter) -> None:
        """Copy one direction: a reader task stamps chunks, this task writes them when due."""
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()
        feeder = asyncio.create_task(self._read_into(reader, queue))
        try:
            while True:
                due, data = await queue.get()
                if not data:
                    break
                delay = due - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                await self._open.wait()
                if connection.closed:
                    return
                if connection.limit is not None:
                    room = connection.limit - connection.forwarded
                    if room <= len(data):
                        writer.write(data[:max(room, 0)])
                        self._stats.closed_after_bytes += 1
                        connection.forwarded = connection.limit
                        self._end(connection, rst=True)
                        return
                writer.write(data)
                connection.forwarded += len(data)
                self._stats.bytes_forwarded += len(data)
                await writer.drain()
            # The sender closed its side, so pass the FIN on and let the other direction finish.
            if writer.can_write_eof():
                with contextlib.suppress(OSError):
                    writer.write_eof()
        except (ConnectionError, OSError):
            self._end(connection, rst=True)
        finally:
            feeder.cancel()

    async def _read_into(self, reader: asyncio.StreamReader, queue: asyncio.Queue[tuple[float, bytes]]) -> None:
        try:
            while True:
                data = await reader.read(CHUNK_BYTES)
                delay = self._latency_s + (self._random.uniform(0, self._jitter_s) if self._jitter_s else 0.0)
                await queue.put((time.monotonic() + delay, data))
                if not data:
                    return
        except (ConnectionError, OSError):
            await queue.put((time.monotonic(), b""))

    def _end(self, connection: _Connection, rst: bool) -> None:
        if connection.closed:
            return
        connection.closed = True
        self._connections.discard(connection)
        for writer in (connection.client, connection.upstream):
            if writer is None:
                continue
            if rst:
                _abort_with_rst(writer)
            else:
                writer.close()
        for task in connection.tasks:
            if task is not asyncio.current_task():
                task.cancel()
