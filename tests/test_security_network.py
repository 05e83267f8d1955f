"""Slow and stalled clients against a real server process (issue 13 item 1).

gthread gave each connection a thread at its first byte and waited without a timeout for
the rest: four clients sending half a request froze a 2 x 2-thread service. The front of
api/worker.py reads requests whole before a thread takes them and closes the slow ones.
"""
from __future__ import annotations

import http.client
import socket
import time

import pytest
import requests

from tests.support import Server, envelope_of

pytestmark = pytest.mark.e2e

TIMEOUTS = {"header_timeout": 2, "body_timeout": 2, "buffer_bytes": 1_000_000}


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
        connection = socket.create_connection(("127.0.0.1", server.port), timeout=30)
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
            assert answer.startswith(b"HTTP/1.1 408") or answer == b"", answer[:100]
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


def test_a_body_past_the_front_buffer_streams_to_a_thread_that_times_out_too(server, faces):
    photo = (faces / "samples" / "obama.jpg").read_bytes()
    padding = b"\0" * 1_200_000  # the request is larger than the worker's 1 MB buffer
    answer = requests.post(server.url + "/encode", files={"file": ("o.jpg", photo), "pad": ("pad.bin", padding)},
                           timeout=30)
    assert len(envelope_of(answer, 200)["data"]) == 1
    stalled = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    with stalled:
        stalled.sendall(b"POST /encode HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
                        b"Content-Length: 2000000\r\n\r\n--b\r\n" + b"\0" * 10_000)
        time.sleep(0.5)
        began = time.monotonic()
        assert envelope_of(requests.get(server.url + "/health", timeout=2), 200)["data"]["up"]
        assert time.monotonic() - began < 2
        stalled.settimeout(TIMEOUTS["body_timeout"] + 5)
        try:
            while stalled.recv(4096):
                pass
        except ConnectionResetError:
            pass
    assert time.monotonic() - began < TIMEOUTS["body_timeout"] + 4


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
            raw = socket.create_connection(("127.0.0.1", server.port), timeout=10)
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
