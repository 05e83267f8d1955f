"""The gunicorn worker: gthread behind a front that reads every request whole before a thread sees it.

gthread hands a connection to a thread as soon as its first byte arrives; the thread then
waits, with no timeout, for the rest. With 2 threads per worker, four clients that send half
a request (``POST /predict HTTP/1.1\\r\\nHost: x\\r\\n`` and nothing more, or a body shorter
than its Content-Length) held every thread of a 2-worker service and /health stopped
answering (issue 13).

Here the worker's event loop reads each connection without blocking (selectors) until its
headers and body are complete, holding up to ``max_buffered`` such connections, and only
then queues it for a thread, which finds the whole request already read. Headers must arrive
within ``header_timeout`` seconds of the connection; a body may pause at most
``body_timeout`` seconds and must arrive within ``body_timeout`` plus one second per
``MIN_BODY_RATE`` bytes; past that the connection is answered 408 and closed. Bodies are held
in memory up to ``SPOOL_MEMORY`` bytes, then in a temporary file, up to ``buffer_bytes``
for all the requests of a worker: a body past that budget (large uploads arriving
together) goes to a thread as it streams in, and there, as for every socket operation of a
thread (writing an answer to a client that does not read included), a pause longer than
``body_timeout`` ends the connection. A worker accepts a new
connection while it has a free thread and room in its front, so a worker busy with
predictions still leaves new connections to an idle one (as gthread without keep-alive did).
TLS handshakes run in the front too.
"""
from __future__ import annotations

import errno
import selectors
import socket
import ssl
import tempfile
import time
from functools import partial

from gunicorn import http
from gunicorn import sock as gunicorn_sock
from gunicorn.workers.gthread import TConn, ThreadWorker

MAX_HEADER_BYTES = 64 * 1024  # more than gunicorn's own limits (8 KB line, 100 x 8 KB fields) would accept anyway
SPOOL_MEMORY = 1 << 20
MIN_BODY_RATE = 50_000  # bytes per second a long upload must average
READ_CHUNK = 64 * 1024
# A connection still being read counts as taking a thread for its first FRESH_GRACE seconds:
# a request that arrives at once (most do) then goes to a worker with a free thread, as with
# gthread; a slow one stops counting soon, so it cannot keep the worker from accepting.
FRESH_GRACE = 0.05


class ChunkedEnd:
    """Finds where a ``Transfer-Encoding: chunked`` body ends, fed the bytes as they arrive."""

    def __init__(self):
        self.state, self.remaining, self.line = "size", 0, b""
        self.done = self.bad = False

    def feed(self, data: bytes) -> None:
        """Follow the chunked framing over ``data``: ``done`` at the last chunk, ``bad`` on a framing error."""
        position = 0
        while position < len(data) and not (self.done or self.bad):
            if self.state == "data":
                taken = min(self.remaining, len(data) - position)
                self.remaining -= taken
                position += taken
                if self.remaining == 0:
                    self.state = "size"
                continue
            end = data.find(b"\n", position)
            if end < 0:
                self.line += data[position:]
                self.bad = len(self.line) > 4096
                return
            line, self.line, position = (self.line + data[position:end]).rstrip(b"\r"), b"", end + 1
            if self.state == "trailer":
                self.done = not line
                continue
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                self.bad = True
                return
            self.state, self.remaining = ("trailer", 0) if size == 0 else ("data", size + 2)


class PendingRequest:
    """One connection whose request is still arriving: its bytes so far and its deadlines."""

    def __init__(self, sock, client, server, header_deadline: float):
        self.sock, self.client, self.server = sock, client, server
        self.header = bytearray()
        self.body = None  # a spooled file once the headers are complete
        self.expected = None  # body bytes still due (Content-Length), None for chunked
        self.chunked: ChunkedEnd | None = None
        self.reserved = 0  # bytes of the worker's buffer_bytes held for this body
        self.deadline = header_deadline
        self.idle_deadline = header_deadline
        self.accepted = time.monotonic()
        self.handshaking = isinstance(sock, ssl.SSLSocket)
        self.interim = b""  # e.g. "100 Continue", sent before the body is read


class FrontConn(TConn):
    """gthread's connection, whose socket operations in a thread time out (``io_timeout``)."""

    io_timeout = 30.0

    def init(self):
        """gthread's set-up of the connection, then the socket timeout."""
        # gthread's handle() makes the socket blocking, without a timeout, just before this
        super().init()
        self.sock.settimeout(self.io_timeout)


class BufferedSource:
    """What gunicorn's parser reads from: the buffered request, then the socket itself."""

    def __init__(self, spool, sock):
        self.spool, self.sock = spool, sock

    def recv(self, size: int) -> bytes:
        """Return up to ``size`` bytes: the buffered ones first, then the socket's."""
        if self.spool is not None:
            data = self.spool.read(size)
            if data:
                return data
            self.spool.close()
            self.spool = None
        return self.sock.recv(size)


def header_values(header: bytes) -> dict[bytes, list[bytes]]:
    """Return the header fields (lower-case names) of a request head."""
    fields: dict[bytes, list[bytes]] = {}
    for line in header.split(b"\n")[1:]:
        name, colon, value = line.partition(b":")
        if colon:
            fields.setdefault(name.strip().lower(), []).append(value.strip())
    return fields


class BufferingWorker(ThreadWorker):
    """gthread with a non-blocking front that buffers whole requests (see the module docstring).

    The limits are class attributes; ``configured`` returns a subclass with the config's."""

    header_timeout = 10.0
    body_timeout = 30.0
    max_buffered = 100
    buffer_bytes = 256 << 20  # body bytes the front holds at once (memory and temporary files)
    max_body = 256 << 20  # a larger declared body goes straight to the app, which refuses it (413)

    @classmethod
    def configured(cls, *, header_timeout: float, body_timeout: float, max_buffered: int, buffer_bytes: int,
                   max_body: int):
        """Return this worker class with the timeouts and budgets of the configuration."""
        return type(cls.__name__, (cls,), {"header_timeout": header_timeout, "body_timeout": body_timeout,
                                          "max_buffered": max_buffered, "buffer_bytes": buffer_bytes,
                                          "max_body": max_body})

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.pending: dict[int, PendingRequest] = {}
        self.reserved = 0  # of buffer_bytes, by the pending requests
        self._tls_context = None

    # -- accepting -----------------------------------------------------------------------
    def set_accept_enabled(self, enabled):
        """Accept only while a thread is free and the front has room."""
        # run() asks once per loop turn with nr_conns < worker_connections (free threads);
        # the front must have room too
        super().set_accept_enabled(enabled and self.has_room())

    def has_room(self) -> bool:
        """Whether to accept another connection: the front is not full, and the threads plus
        the connections accepted just now leave a thread free (see FRESH_GRACE)."""
        now = time.monotonic()
        fresh = sum(now - pending.accepted < FRESH_GRACE for pending in self.pending.values())
        return len(self.pending) < self.max_buffered and self.nr_conns + fresh < self.worker_connections

    def wait_for_and_dispatch_events(self, timeout):
        """Wait for socket events, waking up soon enough to accept again."""
        # wake up when a fresh connection stops counting, to accept again (see has_room)
        super().wait_for_and_dispatch_events(min(timeout, FRESH_GRACE) if self.pending else timeout)

    def accept(self, listener):
        """Accept a connection into the front (not to a thread): its head is read there first."""
        try:
            client_sock, client_addr = listener.accept()
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                raise
            return
        client_sock.setblocking(False)
        if self.cfg.is_ssl:
            try:
                client_sock = self.tls_context().wrap_socket(
                    client_sock, server_side=True, do_handshake_on_connect=False,
                    suppress_ragged_eofs=self.cfg.suppress_ragged_eofs)
            except (OSError, ValueError):
                client_sock.close()
                return
        self.start_reading(PendingRequest(client_sock, client_addr, listener.getsockname(),
                                          time.monotonic() + self.header_timeout))
        if not self.has_room():
            super().set_accept_enabled(False)

    def tls_context(self):
        """Return the TLS context of the configuration, made once."""
        if self._tls_context is None:
            self._tls_context = gunicorn_sock.ssl_context(self.cfg)
        return self._tls_context

    def on_client_socket_readable(self, conn, client):
        """A keep-alive connection sends its next request: read it in the front too."""
        self.poller.unregister(client)
        self.keepalived_conns.remove(conn)
        self.nr_conns -= 1
        self.start_reading(PendingRequest(conn.sock, conn.client, conn.server,
                                          time.monotonic() + self.header_timeout))

    def start_reading(self, pending: PendingRequest) -> None:
        """Read the request of ``pending`` in the front, as its bytes arrive."""
        self.pending[pending.sock.fileno()] = pending
        self.poller.register(pending.sock, selectors.EVENT_READ, partial(self.on_readable, pending))

    # -- reading -------------------------------------------------------------------------
    def on_readable(self, pending: PendingRequest, _fileobj) -> None:
        """Take what the socket of ``pending`` has; hand the request to a thread once whole."""
        try:
            if pending.handshaking:
                pending.sock.do_handshake()
                pending.handshaking = False
            while True:
                data = pending.sock.recv(READ_CHUNK)
                if not data:
                    return self.drop(pending)
                if self.received(pending, data):
                    return self.hand_over(pending)
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError, InterruptedError):
            return  # more later
        except (OSError, ValueError):
            return self.drop(pending)

    def received(self, pending: PendingRequest, data: bytes) -> bool:
        """Take ``data``; return True once the request is complete (or must go to the app as is)."""
        now = time.monotonic()
        if pending.body is None:
            pending.header += data
            end = pending.header.find(b"\r\n\r\n")
            end = end + 4 if end >= 0 else -1
            if end < 0:
                bare = pending.header.find(b"\n\n")
                end = bare + 2 if bare >= 0 else -1
            if end < 0:
                return len(pending.header) > MAX_HEADER_BYTES  # the parser answers it 400/431
            head, rest = bytes(pending.header[:end]), bytes(pending.header[end:])
            fields = header_values(head)
            pending.body = tempfile.SpooledTemporaryFile(max_size=SPOOL_MEMORY)
            pending.idle_deadline = now + self.body_timeout
            if b"chunked" in b",".join(fields.get(b"transfer-encoding", [])).lower():
                pending.chunked = ChunkedEnd()
            else:
                lengths = fields.get(b"content-length", [b"0"])
                try:
                    pending.expected = int(lengths[0]) if len(set(lengths)) == 1 else None
                except ValueError:
                    pending.expected = None
                if pending.expected is None or pending.expected < 0 or pending.expected > self.max_body:
                    pending.body.write(head + rest)  # malformed or too large: the parser or the app refuses it
                    return True
                if not self.reserve(pending, pending.expected):
                    pending.body.write(head + rest)  # over the budget: a thread reads the rest, with a timeout
                    return True
            pending.deadline = now + self.body_timeout + (pending.expected or self.max_body) / MIN_BODY_RATE
            if b"100-continue" in b",".join(fields.get(b"expect", [])).lower():
                head = self.without_expect(head)
                pending.interim = b"HTTP/1.1 100 Continue\r\n\r\n"
                try:
                    pending.sock.send(pending.interim)
                except (ssl.SSLWantWriteError, BlockingIOError):
                    pass  # a client that cannot take 21 bytes sends its body after its own wait
            pending.body.write(head)
            data = rest
        pending.idle_deadline = now + self.body_timeout
        if pending.chunked is not None:
            pending.body.write(data)
            pending.chunked.feed(data)
            over_budget = not self.reserve(pending, len(data))
            return pending.chunked.done or pending.chunked.bad or over_budget
        pending.body.write(data)
        pending.expected -= len(data)
        return pending.expected <= 0

    def reserve(self, pending: PendingRequest, size: int) -> bool:
        """Hold ``size`` more bytes of the budget for ``pending``; False when they do not fit."""
        if self.reserved + size > self.buffer_bytes:
            return False
        self.reserved += size
        pending.reserved += size
        return True

    @staticmethod
    def without_expect(head: bytes) -> bytes:
        """The request head without its Expect field: the front already answered it."""
        lines = head.split(b"\r\n")
        return b"\r\n".join(line for line in lines if not line.lower().startswith(b"expect:"))

    def hand_over(self, pending: PendingRequest) -> None:
        """The request is whole: queue it for a thread, with the parser reading the buffer."""
        self.forget(pending)
        pending.body.seek(0)
        conn = FrontConn(self.cfg, pending.sock, pending.client, pending.server)
        conn.io_timeout = self.body_timeout
        conn.parser = http.get_parser(self.cfg, BufferedSource(pending.body, pending.sock), pending.client)
        conn.data_ready = True
        self.nr_conns += 1
        self.enqueue_req(conn)

    def forget(self, pending: PendingRequest) -> None:
        """Stop watching ``pending`` and release its share of the buffer budget."""
        self.pending.pop(pending.sock.fileno(), None)
        self.reserved -= pending.reserved
        pending.reserved = 0
        try:
            self.poller.unregister(pending.sock)
        except (KeyError, ValueError, OSError):
            pass

    def drop(self, pending: PendingRequest, answer: bytes = b"") -> None:
        """Close the connection of ``pending``, after sending ``answer`` if any."""
        self.forget(pending)
        if pending.body is not None:
            pending.body.close()
        try:
            if answer:
                pending.sock.send(answer)
            pending.sock.shutdown(socket.SHUT_RDWR)
        except (OSError, ValueError):
            pass
        pending.sock.close()

    # -- timeouts (run() calls this once a second) ---------------------------------------
    def murder_keepalived(self, *args, **kwargs):
        """gthread's keep-alive clean-up, then 408 to the requests past their deadlines."""
        super().murder_keepalived(*args, **kwargs)
        now = time.monotonic()
        for pending in list(self.pending.values()):
            if now > pending.deadline or now > pending.idle_deadline:
                self.drop(pending, b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
