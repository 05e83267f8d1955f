"""The gunicorn worker: gthread behind a front that reads every request whole before a thread sees it.

gthread hands a connection to a thread as soon as its first byte arrives; the thread then
waits, with no timeout, for the rest. With 2 threads per worker, four clients that send half
a request (``POST /predict HTTP/1.1\\r\\nHost: x\\r\\n`` and nothing more, or a body shorter
than its Content-Length) held every thread of a 2-worker service and /health stopped
answering (issue 13).

Here the worker's event loop reads each connection without blocking (selectors) until its
headers and body are complete, holding up to ``max_buffered`` such connections, and only
then queues it for a thread, which finds the whole request already read: a thread never waits
for a client. Headers must arrive within ``header_timeout`` seconds of the connection. Every
body, whatever its framing (Content-Length or chunked) and size, may pause at most
``body_timeout`` seconds and must keep up ``min_body_rate`` bytes a second after its first
``body_timeout`` seconds; past that the connection is answered 408 and closed (issue 24: a
chunked body had 90 minutes, and one past the buffer went to a thread).

Bodies are held in memory up to ``SPOOL_MEMORY`` bytes, then in a temporary file, up to
``buffer_bytes`` for all the requests of a worker and ``client_buffer_bytes`` for those of
one client address; one address may have ``client_connections`` connections in the front.
Past those, the request is refused at once (503 for the worker's budget, 429 for an
address's) instead of waiting. A full front (``max_buffered`` connections) closes its slowest
connection to take a new one, so slow clients from many addresses cannot keep a quick request
out either. A worker accepts a new connection while it has a free thread
and room in its front, so a worker busy with predictions still leaves new connections to an
idle one (as gthread without keep-alive did). TLS handshakes run in the front too.

The request errors gunicorn's parser finds (a 414 for a request line past 4094 bytes, 431,
400) are answered by the app, so they have the route's own error shape (the envelope, or a
dialect's) instead of gunicorn's HTML page.
"""
from __future__ import annotations

import errno
import json
import logging
import selectors
import socket
import ssl
import tempfile
import threading
import time
from collections import Counter
from functools import partial

from gunicorn import http
from gunicorn import sock as gunicorn_sock
from gunicorn.http import errors as parse_errors
from gunicorn.workers.gthread import TConn, ThreadWorker
from werkzeug import exceptions as http_exceptions
from werkzeug.test import EnvironBuilder

from api.errors import FRONT_ERROR, HTTP_CODES
from datastructure.response import envelope

log = logging.getLogger(__name__)

MAX_HEADER_BYTES = 64 * 1024  # more than gunicorn's own limits (8 KB line, 100 x 8 KB fields) would accept anyway
SPOOL_MEMORY = 1 << 20
READ_CHUNK = 64 * 1024
# A connection still being read counts as taking a thread for its first FRESH_GRACE seconds:
# a request that arrives at once (most do) then goes to a worker with a free thread, as with
# gthread; a slow one stops counting soon, so it cannot keep the worker from accepting.
FRESH_GRACE = 0.05
RETRY_AFTER = 30  # seconds a client refused for a full front is told to wait
# A full front makes room for a new connection by closing its slowest one (fewest bytes a
# second since it was accepted) among those older than this: many slow clients from many
# addresses then cannot keep a fast request, /health's say, waiting behind them.
EVICTABLE_AFTER = 1.0
# The app's answer to what gunicorn's parser refuses (werkzeug's errors, so the app's own
# handlers give them the route's error shape); any other parse error is a 400.
PARSE_ERRORS = ((parse_errors.LimitRequestLine, http_exceptions.RequestURITooLarge),
                (parse_errors.LimitRequestHeaders, http_exceptions.RequestHeaderFieldsTooLarge),
                (parse_errors.UnsupportedTransferCoding, http_exceptions.NotImplemented),
                (parse_errors.ExpectationFailed, http_exceptions.ExpectationFailed),
                (parse_errors.ForbiddenProxyRequest, http_exceptions.Forbidden))
# Parse errors that are the service's fault, not the client's: gunicorn's own 500.
SERVER_FAULTS = (parse_errors.InvalidResponseHeader, parse_errors.InvalidResponseHeaderName,
                 parse_errors.ConfigurationProblem)


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


class Refused(Exception):
    """A request the front answers itself and closes: ``answer`` is the whole HTTP answer."""

    def __init__(self, status: int, reason: str, code: str, description: str, retry_after: int | None = None):
        super().__init__(description)
        self.answer = front_answer(status, reason, code, description, retry_after)


def front_answer(status: int, reason: str, code: str, description: str, retry_after: int | None = None) -> bytes:
    """The KO envelope as a whole HTTP answer that closes the connection (the front's own refusals,
    sent from the event loop, where the path may not even be known yet)."""
    body = json.dumps(envelope(None, description=description, error=code, status="KO")).encode()
    head = (f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            + (f"Retry-After: {retry_after}\r\n" if retry_after else "") + "Connection: close\r\n\r\n")
    return head.encode() + body


# The front's own answers, made when sent (the envelope is dated)
TIMED_OUT = (408, "Request Timeout", "REQUEST_TIMEOUT", "the request arrived too slowly: send it whole, at a steady rate")
TOO_MANY_CONNECTIONS = (429, "Too Many Requests", "TOO_MANY_REQUESTS",
                        "too many connections from this address are still sending their requests")
EVICTED = (503, "Service Unavailable", "SERVER_BUSY",
           "the service is full of requests still arriving, and yours was the slowest: retry later", RETRY_AFTER)


def client_host(client) -> str:
    """The client's address without its port ('' for a Unix socket)."""
    return client[0] if isinstance(client, tuple) else ""


class PendingRequest:
    """One connection whose request is still arriving: its bytes so far and its deadlines."""

    def __init__(self, sock, client, server, header_deadline: float):
        self.sock, self.client, self.server = sock, client, server
        self.host = client_host(client)
        self.header = bytearray()
        self.body = None  # a spooled file once the headers are complete
        self.expected = None  # body bytes still due (Content-Length), None for chunked
        self.chunked: ChunkedEnd | None = None
        self.reserved = 0  # bytes of the worker's buffer_bytes held for this body
        self.received = 0  # body bytes so far
        self.header_deadline = header_deadline
        self.body_started = self.idle_deadline = 0.0
        self.accepted = time.monotonic()
        self.handshaking = isinstance(sock, ssl.SSLSocket)
        self.interim = b""  # e.g. "100 Continue", sent before the body is read

    def late(self, now: float, body_timeout: float, min_rate: float) -> bool:
        """Whether the request is past its deadline: its head not whole within header_timeout, or
        its body paused longer than body_timeout or behind min_rate (by more than body_timeout)."""
        if self.body is None:
            return now > self.header_deadline
        return now > self.idle_deadline or now - self.body_started > body_timeout + self.received / min_rate

    def request_line(self) -> bytes:
        """The start of the request line (its method and path), for the answer to a parse error."""
        return bytes(self.header[:8192]).split(b"\n", 1)[0]


class FrontConn(TConn):
    """gthread's connection, whose socket operations in a thread time out (``io_timeout``)."""

    io_timeout = 30.0
    request_line = b""

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
    min_body_rate = 50_000  # bytes per second a body must keep up after its first body_timeout seconds
    max_buffered = 100
    buffer_bytes = 512 << 20  # body bytes the front holds at once (memory and temporary files)
    client_buffer_bytes = 256 << 20  # of which one client address may hold
    client_connections = 20  # connections one client address may have in the front
    max_body = 256 << 20  # a larger declared body goes straight to the app, which refuses it (413)

    @classmethod
    def configured(cls, **limits):
        """Return this worker class with the timeouts and budgets of the configuration (the
        class attributes above, by name)."""
        unknown = set(limits) - set(vars(BufferingWorker))
        if unknown:
            raise TypeError(f"not a limit of the front: {sorted(unknown)}")
        return type(cls.__name__, (cls,), limits)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.pending: dict[int, PendingRequest] = {}
        self.reserved = 0  # of buffer_bytes, by the pending requests
        self.client_reserved: Counter[str] = Counter()  # of client_buffer_bytes, per address
        self.client_pending: Counter[str] = Counter()  # connections in the front, per address
        self.current = threading.local()  # the request line of the connection a thread handles
        self._tls_context = None

    # -- accepting -----------------------------------------------------------------------
    def set_accept_enabled(self, enabled):
        """Accept only while a thread is free and the front has room."""
        # run() asks once per loop turn with nr_conns < worker_connections (free threads);
        # the front must have room too
        super().set_accept_enabled(enabled and self.has_room())

    def has_room(self) -> bool:
        """Whether to accept another connection: the front is not full or can close a slow one
        (see make_room), and the threads plus the connections accepted just now leave a thread
        free (see FRESH_GRACE)."""
        now = time.monotonic()
        fresh = sum(now - pending.accepted < FRESH_GRACE for pending in self.pending.values())
        return (self.nr_conns + fresh < self.worker_connections
                and (len(self.pending) < self.max_buffered or bool(self.evictable(now))))

    def evictable(self, now: float) -> list[PendingRequest]:
        """The connections a full front may close: those older than EVICTABLE_AFTER."""
        return [pending for pending in self.pending.values() if now - pending.accepted > EVICTABLE_AFTER]

    def make_room(self) -> bool:
        """Whether the front has room for one more connection, once it has closed (503) its
        slowest evictable connection if it was full."""
        if len(self.pending) < self.max_buffered:
            return True
        now = time.monotonic()
        older = self.evictable(now)
        if not older:
            return False
        slowest = min(older, key=lambda pending: (len(pending.header) + pending.received) / (now - pending.accepted))
        self.drop(slowest, front_answer(*EVICTED))
        return True

    def wait_for_and_dispatch_events(self, timeout):
        """Wait for socket events, waking up soon enough to accept again."""
        # wake up when a fresh connection stops counting, to accept again (see has_room)
        super().wait_for_and_dispatch_events(min(timeout, FRESH_GRACE) if self.pending else timeout)

    def accept(self, listener):
        """Accept a connection into the front (not to a thread): its head is read there first.
        An address that already has ``client_connections`` there is answered 429 at once."""
        try:
            client_sock, client_addr = listener.accept()
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                raise
            return
        client_sock.setblocking(False)
        if self.client_pending[client_host(client_addr)] >= self.client_connections:
            return self.refuse(client_sock, front_answer(*TOO_MANY_CONNECTIONS))
        if not self.make_room():
            return self.refuse(client_sock, front_answer(*EVICTED))
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

    def refuse(self, client_sock, answer: bytes) -> None:
        """Answer a connection just accepted and close it."""
        if not self.cfg.is_ssl:  # over TLS, before the handshake, an answer would be garbage
            try:
                client_sock.send(answer)
            except OSError:
                pass
        client_sock.close()

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
        self.client_pending[pending.host] += 1
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
        except Refused as refusal:
            return self.drop(pending, refusal.answer)
        except (OSError, ValueError):
            return self.drop(pending)

    def received(self, pending: PendingRequest, data: bytes) -> bool:
        """Take ``data``; return True once the request is complete (or must go to the app as is).
        Refused when the body does not fit the worker's or the address's budget."""
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
            pending.body_started = now
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
                self.reserve(pending, pending.expected)
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
        pending.received += len(data)
        pending.body.write(data)
        if pending.chunked is not None:
            if pending.received > self.max_body:
                raise Refused(413, "Content Too Large", "REQUEST_TOO_LARGE",
                              f"the request body is larger than {self.max_body:,} bytes")
            self.reserve(pending, len(data))
            pending.chunked.feed(data)
            return pending.chunked.done or pending.chunked.bad
        pending.expected -= len(data)
        return pending.expected <= 0

    def reserve(self, pending: PendingRequest, size: int) -> None:
        """Hold ``size`` more bytes of the budgets for ``pending``; Refused (429: its address has
        too much in the front; 503: the worker has) when they do not fit."""
        if self.reserved + size > self.buffer_bytes:
            raise Refused(503, "Service Unavailable", "SERVER_BUSY",
                          "the service is receiving too many uploads at once: retry later", RETRY_AFTER)
        if self.client_reserved[pending.host] + size > self.client_buffer_bytes:
            raise Refused(429, "Too Many Requests", "TOO_MANY_REQUESTS",
                          "this address is sending too many request bodies at once: send them one after the other")
        self.reserved += size
        self.client_reserved[pending.host] += size
        pending.reserved += size

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
        conn.request_line = pending.request_line()
        conn.parser = http.get_parser(self.cfg, BufferedSource(pending.body, pending.sock), pending.client)
        conn.data_ready = True
        self.nr_conns += 1
        self.enqueue_req(conn)

    def forget(self, pending: PendingRequest) -> None:
        """Stop watching ``pending`` and release its share of the budgets."""
        if self.pending.pop(pending.sock.fileno(), None) is not None:
            self.client_pending[pending.host] -= 1
            if not self.client_pending[pending.host]:
                del self.client_pending[pending.host]
        self.reserved -= pending.reserved
        self.client_reserved[pending.host] -= pending.reserved
        if self.client_reserved[pending.host] <= 0:
            del self.client_reserved[pending.host]
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
            if pending.late(now, self.body_timeout, self.min_body_rate):
                self.drop(pending, front_answer(*TIMED_OUT))

    # -- the answer to a request gunicorn's parser refuses ------------------------------
    def handle(self, conn):
        """gthread's handling of a whole request, remembering its request line for handle_error."""
        self.current.request_line = getattr(conn, "request_line", b"")
        return super().handle(conn)

    def handle_error(self, req, client, addr, exc):
        """Answer what the parser refuses through the app, in the route's own error shape;
        gunicorn's own answer (its log line and a 500) for everything else."""
        if not isinstance(exc, parse_errors.ParseException) or isinstance(exc, SERVER_FAULTS):
            return super().handle_error(req, client, addr, exc)
        error = next((kind() for parsed, kind in PARSE_ERRORS if isinstance(exc, parsed)), None)
        error = error or http_exceptions.BadRequest(f"the request is malformed: {exc}")
        log.warning("refused a malformed request from %s: %s", client_host(addr), type(exc).__name__)
        try:
            answer = self.app_answer(self.current.request_line, error)
        except Exception:  # a request line the app cannot even route: the envelope, still no HTML
            log.exception("the answer to a malformed request failed")
            answer = front_answer(error.code, error.name, HTTP_CODES.get(error.code, "BAD_REQUEST"), error.description)
        try:
            client.sendall(answer)
        except OSError:
            pass

    def app_answer(self, request_line: bytes, error: Exception) -> bytes:
        """The app's answer to ``error`` for the path of ``request_line`` (cut to its first 1 KB,
        without its query), as a whole HTTP answer that closes the connection."""
        method, _, rest = request_line.decode("latin-1").partition(" ")
        path = rest.split(" ", 1)[0].split("?", 1)[0][:1024]
        environ = EnvironBuilder(path=path if path.startswith("/") else "/",
                                 method=method if method.isalpha() and len(method) < 16 else "GET").get_environ()
        environ[FRONT_ERROR] = error
        started = []
        chunks = self.wsgi(environ, lambda status, headers, exc_info=None: started.extend((status, headers)))
        try:
            body = b"".join(chunks)
        finally:
            getattr(chunks, "close", lambda: None)()
        status, headers = started
        fields = "".join(f"{name}: {value}\r\n" for name, value in headers if name.lower() != "connection")
        return f"HTTP/1.1 {status}\r\n{fields}Connection: close\r\n\r\n".encode("latin-1") + body
