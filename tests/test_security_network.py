"""Slow and stalled clients against a real server process (issue 13 item 1, issue 24 items 2 and 13).

gthread gave each connection a thread at its first byte and waited without a timeout for
the rest: four clients sending half a request froze a 2 x 2-thread service. The front of
api/worker.py reads requests whole before a thread takes them, closes the slow ones (every
body must keep up a minimum rate, whatever its framing), refuses what does not fit its budgets
(per worker and per client address), and answers gunicorn's parse errors in the route's shape.

Attackers connect from other loopback addresses (127.0.0.2 and up) than the /health probes
(127.0.0.1), as they would from other hosts: the front caps connections per address.
"""
from __future__ import annotations

import http.client
import json
import socket
import time

import pytest
import requests

from tests.support import Server, envelope_of

pytestmark = pytest.mark.e2e

TIMEOUTS = {"header_timeout": 2, "body_timeout": 2, "min_body_rate": 100, "buffer_bytes": 1_000_000,
            "client_buffer_bytes": 500_000, "client_connections": 8, "max_buffered": 10}


def connect_from(server, address: str = "127.0.0.2", timeout: float = 30) -> socket.socket:
    """A connection to ``server`` from the loopback ``address`` (another client, as far as the front can tell)."""
    return socket.create_connection(("127.0.0.1", server.port), timeout=timeout, source_address=(address, 0))


def health_answers(server) -> None:
    """/health answers at once (the probes come from 127.0.0.1, which no attacker uses)."""
    began = time.monotonic()
    assert envelope_of(requests.get(server.url + "/health", timeout=2), 200)["data"]["up"]
    assert time.monotonic() - began < 2


def answer_of(connection: socket.socket, timeout: float) -> bytes:
    """What the server sends on ``connection`` until it closes it (b"" for a plain close), or
    until ``timeout`` seconds of silence."""
    connection.settimeout(timeout)
    answer = b""
    try:
        while chunk := connection.recv(4096):
            answer += chunk
    except (ConnectionResetError, TimeoutError):
        pass
    return answer


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """One real server (2 workers x 2 threads, as conf.json) with short read timeouts and a
    1 MB front buffer per worker."""
    started = Server(tmp_path_factory.mktemp("front"), config={"server": TIMEOUTS}).start()
    yield started
    started.stop()


def slow_sockets(server, count: int) -> list[socket.socket]:
    """``count`` connections that each send part of a request and then nothing: half of them a
    head without its end, half a complete head with a body shorter than its Content-Length."""
    held = []
    for number in range(count):
        connection = connect_from(server, f"127.0.0.{10 + number}")
        if number % 2:
            connection.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\n")
        else:
            connection.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; "
                               b"boundary=b\r\nContent-Length: 1000\r\n\r\n--b\r\n")
        held.append(connection)
    return held


def test_slow_clients_hold_no_thread_and_are_closed_after_the_timeout(server):
    held = slow_sockets(server, 32)
    try:
        time.sleep(0.5)  # every slow request has reached a worker
        for _ in range(5):
            began = time.monotonic()
            answer = requests.get(server.url + "/health", timeout=2)
            assert envelope_of(answer, 200)["data"]["up"] and time.monotonic() - began < 2
        # past the timeouts every slow connection is answered 408 and closed
        deadline = time.monotonic() + TIMEOUTS["header_timeout"] + TIMEOUTS["body_timeout"] + 5
        for connection in held:
            connection.settimeout(max(0.1, deadline - time.monotonic()))
            answer = b""
            while chunk := connection.recv(4096):
                answer += chunk
            assert answer[:12] in (b"HTTP/1.1 408", b"HTTP/1.1 503", b""), answer[:100]  # 503: see below
    finally:
        for connection in held:
            connection.close()


def test_a_client_that_trickles_its_head_is_closed_too(server):
    """One byte a second never completes a head within header_timeout: closed, not waited for."""
    connection = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    began = time.monotonic()
    with connection:
        try:
            for byte in b"GET /health HTTP/1.1\r\nHost: x\r\n":
                connection.sendall(bytes([byte]))
                time.sleep(0.5)
        except OSError:  # the server closed first
            pass
        connection.settimeout(5)
        try:
            answer = connection.recv(4096)
        except ConnectionResetError:
            answer = b""
    assert answer.startswith(b"HTTP/1.1 408") or answer == b""
    assert time.monotonic() - began < TIMEOUTS["header_timeout"] + 4


def test_whole_requests_of_every_framing_pass_the_front(server, faces):
    """Chunked bodies, Expect: 100-continue and a body sent after a pause all reach the app."""
    photo = (faces / "samples" / "obama.jpg").read_bytes()
    boundary = "front-test"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"o.jpg\"\r\n"
            f"Content-Type: image/jpeg\r\n\r\n").encode() + photo + f"\r\n--{boundary}--\r\n".encode()
    headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}

    def encode_answer(connection: http.client.HTTPConnection) -> dict:
        answer = connection.getresponse()
        assert answer.status == 200, answer.read()[:300]
        import json
        return json.loads(answer.read())["response"]

    chunked = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    chunked.request("POST", "/encode", body=(body[i:i + 7000] for i in range(0, len(body), 7000)),
                    headers=headers, encode_chunked=True)
    assert len(encode_answer(chunked)["data"]) == 1

    # Expect: 100-continue: the front answers 100 and then reads the body
    raw = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    with raw:
        raw.sendall(f"POST /encode HTTP/1.1\r\nHost: x\r\nContent-Type: {headers['Content-Type']}\r\n"
                    f"Content-Length: {len(body)}\r\nExpect: 100-continue\r\n\r\n".encode())
        assert raw.recv(64).startswith(b"HTTP/1.1 100 Continue")
        time.sleep(1)  # a pause shorter than body_timeout is fine
        raw.sendall(body)
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
            chunk = raw.recv(65536)
            if not chunk:
                break
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 200"), answer[:300]


def trickled(server, heads: list[bytes], piece: bytes, seconds: float, subnet: int, probe_after: float = 0) -> list[bytes]:
    """Send each of ``heads`` from an address of its own (127.0.``subnet``.n), then ``piece`` on
    every connection each half second for ``seconds``, checking meanwhile (after ``probe_after``
    seconds) that /health answers; return what the server answered on each connection."""
    held = [connect_from(server, f"127.0.{subnet}.{number + 1}") for number in range(len(heads))]
    try:
        for connection, first in zip(held, heads):
            connection.sendall(first)
        began = time.monotonic()
        while time.monotonic() - began < seconds:
            for connection in held:
                try:
                    connection.sendall(piece)
                except OSError:  # closed by the server: read below
                    pass
            if time.monotonic() - began >= probe_after:
                health_answers(server)
            time.sleep(0.5)
        return [answer_of(connection, 0.3) for connection in held]
    finally:
        for connection in held:
            connection.close()


def error_code(answer: bytes) -> str:
    """The ``error`` of the envelope in a raw HTTP answer."""
    return json.loads(answer.split(b"\r\n\r\n", 1)[1])["response"]["error"]


def test_trickled_bodies_of_every_framing_keep_a_minimum_rate_or_are_closed(server):
    """Issue 24: a chunked body sending a byte every half second (never idle for body_timeout)
    had 90 minutes, and a body declaring more than the front's buffer went to a thread limited
    only per recv: four of those held every thread. Now every body must keep up min_body_rate
    past body_timeout (408), and one past the buffer is refused at once (503), never streamed
    to a thread; /health answers throughout."""
    head = b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
    heads = ([head + b"Transfer-Encoding: chunked\r\n\r\n"] * 6 + [head + b"Content-Length: 300000\r\n\r\n"] * 2
             + [head + b"Content-Length: 2000000\r\n\r\n"] * 4)  # past the 1 MB buffer of a worker
    # a byte every half second: a hex digit of a chunk size, or a byte of the body
    answers = trickled(server, heads, b"1", TIMEOUTS["body_timeout"] + 4, subnet=1)
    assert [answer[:12] for answer in answers] == [b"HTTP/1.1 408"] * 8 + [b"HTTP/1.1 503"] * 4, answers
    assert error_code(answers[-1]) == "SERVER_BUSY" and b"Retry-After: " in answers[-1]


def test_one_address_gets_client_connections_per_worker_and_429_past_them(server):
    """Issue 24: one address could fill every worker's front; now it holds at most
    client_connections connections and client_buffer_bytes of bodies per worker, past them it
    is answered 429 at once, and other addresses are served."""
    held = [connect_from(server, "127.0.0.3") for _ in range(24)]  # 2 workers x 8 at most are kept
    try:
        time.sleep(1)  # every connection has been accepted (or refused)
        health_answers(server)
        answers = [answer_of(connection, TIMEOUTS["header_timeout"] + 5) for connection in held]
    finally:
        for connection in held:
            connection.close()
    refused = [answer for answer in answers if answer.startswith(b"HTTP/1.1 429")]
    assert len(refused) >= 24 - 2 * TIMEOUTS["client_connections"], [answer[:12] for answer in answers]
    assert all(answer.startswith(b"HTTP/1.1 408") for answer in answers if answer not in refused)
    assert error_code(refused[0]) == "TOO_MANY_REQUESTS"
    # and at most client_buffer_bytes of bodies: a 600 kB one fits the worker's 1 MB, not the address's share
    with connect_from(server, "127.0.0.4") as large:
        large.sendall(b"POST /encode HTTP/1.1\r\nHost: x\r\nContent-Length: 600000\r\n\r\n")
        answer = answer_of(large, TIMEOUTS["body_timeout"] + 5)
    assert answer.startswith(b"HTTP/1.1 429") and error_code(answer) == "TOO_MANY_REQUESTS", answer[:200]


def test_a_full_front_closes_its_slowest_connection_to_take_a_new_one(server):
    """Issue 24: bodies arriving just above min_body_rate from more addresses than the fronts
    hold (2 x 10) kept every other request, /health's included, waiting for as long as they
    lasted. A full front now closes its slowest connection (503) to take the new one."""
    chunk = b"12C\r\n" + b"x" * 300 + b"\r\n"  # 300 bytes every half second: 6 times min_body_rate
    head = b"POST /predict HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    answers = trickled(server, [head] * 30, chunk, 5, subnet=3, probe_after=1.5)  # full after ~0.5 s
    evicted = [answer for answer in answers if answer.startswith(b"HTTP/1.1 503")]
    assert evicted and error_code(evicted[0]) == "SERVER_BUSY"


@pytest.mark.parametrize("path, dialect", [
    ("/predict", None), ("/people/" + "x" * 5000, None),
    ("/v1/vision/face/recognize", "deepstack"), ("/api/v1/recognition/recognize", "compreface")])
def test_a_request_line_too_long_is_a_414_in_the_route_shape(server, path, dialect):
    """Issue 24 item 13: gunicorn answered a long name or query with its HTML page."""
    answer = requests.post(server.url + path + "?q=" + "a" * 5000, timeout=10)
    assert answer.status_code == 414 and answer.headers["Content-Type"].startswith("application/json"), answer.text[:200]
    if dialect is None:
        envelope_of(answer, 414, "URI_TOO_LONG")
    elif dialect == "deepstack":
        body = answer.json()
        assert body["success"] is False and body["error"] and set(body) == {"success", "error", "duration"}, body
    else:
        body = answer.json()
        assert set(body) == {"message", "code"} and body["message"], body


def test_slow_clients_over_tls_hold_no_thread_either(tmp_path):
    """The TLS handshake runs in the front too: silent connections and half heads sent over TLS."""
    import ssl

    import urllib3

    urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
    server = Server(tmp_path / "tls", config={"server": TIMEOUTS, "security": {"tls": True}})
    server.url = server.url.replace("http://", "https://")
    server.start()
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    held = []
    try:
        for number in range(16):
            raw = connect_from(server, f"127.0.0.{10 + number}", timeout=10)
            if number % 2:  # a TLS session whose request head never ends
                raw = context.wrap_socket(raw)
                raw.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\n")
            held.append(raw)  # else: no ClientHello at all
        time.sleep(0.5)
        for _ in range(3):
            began = time.monotonic()
            assert envelope_of(requests.get(server.url + "/health", timeout=2, verify=False), 200)["data"]["up"]
            assert time.monotonic() - began < 2
        for connection in held:
            connection.settimeout(TIMEOUTS["header_timeout"] + 5)
            try:
                while connection.recv(4096):
                    pass
            except (ConnectionResetError, ssl.SSLError):
                pass
    finally:
        for connection in held:
            connection.close()
        server.stop()
