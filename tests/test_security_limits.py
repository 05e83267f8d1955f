"""Size and rate limits against a real server configured with small ones.

Flask-Limiter counts per client address (and, in memory, per worker), so each test sends
from its own loopback address (127.0.0.x): one test's requests never use up another's quota.
With two workers a client gets up to twice a limit, which the counts below allow for.
"""
from __future__ import annotations

import itertools

import pytest

from tests.hostile import (Client, MiB, assert_unharmed, good_photo, install_models, photos,
                           server_config, start_server, stopped, written)
from tests.support import envelope_of

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("faces")]

LIMIT = 3  # per minute, for login, predict and train
WORKERS = 2
ATTEMPTS = 4 * LIMIT
_addresses = (f"127.0.0.{last}" for last in itertools.count(20))


@pytest.fixture(scope="module")
def server(tmp_path_factory, hostile_models):
    data_dir = tmp_path_factory.mktemp("limits")
    install_models(data_dir, hostile_models)
    config = server_config(
        limits={"max_content_length": 2 * MiB, "max_form_memory_size": 256 * 1024, "max_form_parts": 50},
        security={"rate_limits": {"login": f"{LIMIT} per minute", "predict": f"{LIMIT} per minute",
                                  "train": f"{LIMIT} per minute"}})
    server = start_server(data_dir, config)
    yield server
    stopped(server)


def client(server) -> Client:
    return Client(server, next(_addresses))


def unharmed(server, before, faces) -> None:
    assert_unharmed(server, before, faces, client=client(server))


# --- bodies over the limits: 413 in the envelope, nothing written ---------------------------

OVERSIZED = 3 * MiB


@pytest.mark.parametrize("path", ["/predict", "/", "/train", "/tune"])
def test_a_body_over_max_content_length_is_refused(server, faces, path):
    before = written(server)
    answer = client(server).post(path, files={"file": ("big.zip", b"\0" * OVERSIZED)})
    envelope_of(answer, 413, "REQUEST_TOO_LARGE")
    unharmed(server, before, faces)


def test_a_chunked_body_over_the_limit_is_refused(server, faces):
    # No Content-Length to check up front: the limit must hold while the body streams in.
    boundary = "hostile"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.jpg\"\r\n"
            "Content-Type: image/jpeg\r\n\r\n").encode()

    def body():
        yield head
        for _ in range(OVERSIZED // (256 * 1024)):
            yield b"\xff" * (256 * 1024)
        yield f"\r\n--{boundary}--\r\n".encode()

    before = written(server)
    answer = client(server).post("/predict", data=body(),
                                 headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    envelope_of(answer, 413, "REQUEST_TOO_LARGE")
    unharmed(server, before, faces)


def test_too_many_form_parts_are_refused(server, faces):
    before = written(server)
    fields = {f"field{index}": "x" for index in range(200)}
    answer = client(server).post("/predict", data=fields, files={"file": ("a.jpg", good_photo(faces).read_bytes())})
    envelope_of(answer, 413, "REQUEST_TOO_LARGE")
    unharmed(server, before, faces)


def test_a_form_field_over_the_memory_limit_is_refused(server, faces):
    before = written(server)
    answer = client(server).post("/train", data={"note": "x" * (512 * 1024)},
                                 files={"file": ("t.zip", photos("Ben/1.jpg", "Madonna/1.jpg"))})
    envelope_of(answer, 413, "REQUEST_TOO_LARGE")
    unharmed(server, before, faces)


# --- rate limits: 429 in the envelope, for this client only ---------------------------------


def assert_limited(answers, *, first_free: int = LIMIT) -> None:
    """The first ``first_free`` answers are served, at most WORKERS * LIMIT are, the rest are 429."""
    statuses = [answer.status_code for answer in answers]
    assert 429 not in statuses[:first_free], statuses
    limited = [answer for answer in answers if answer.status_code == 429]
    assert len(limited) >= len(answers) - WORKERS * LIMIT, statuses
    for answer in limited:
        envelope_of(answer, 429, "TOO_MANY_REQUESTS")
        assert int(answer.headers["Retry-After"]) > 0


def test_login_attempts_are_rate_limited(server, faces):
    from tests.hostile import csrf_token_of

    attacker = client(server)
    token = csrf_token_of(attacker.get("/login", auth=False).text)
    answers = [attacker.post("/login", auth=False, allow_redirects=False,
                             data={"password": f"guess-{index}", "csrf_token": token})
               for index in range(ATTEMPTS)]
    assert_limited(answers, first_free=LIMIT - 1)  # the GET of the form may count too
    # Once limited, even the right password is not checked: guessing cannot go on. Limits count
    # per worker process (memory:// storage, see README) and either worker may take a request,
    # so the guarantee is on the total: over all the attempts, the right password's included,
    # at most WORKERS * LIMIT passwords are checked in the minute.
    rights = [attacker.post("/login", auth=False, allow_redirects=False,
                            data={"password": server.password, "csrf_token": token})
              for _ in range(WORKERS * LIMIT)]
    statuses = [answer.status_code for answer in answers + rights]
    assert sum(status != 429 for status in statuses) <= WORKERS * LIMIT, statuses
    # Someone else still logs in.
    other = client(server)
    token = csrf_token_of(other.get("/login", auth=False).text)
    assert other.post("/login", auth=False, allow_redirects=False,
                      data={"password": server.password, "csrf_token": token}).status_code == 302


def test_predictions_are_rate_limited(server, faces):
    before = written(server)
    greedy = client(server)
    answers = [greedy.post("/predict", files={"file": ("x.jpg", b"not an image")}) for _ in range(ATTEMPTS)]
    assert_limited(answers)
    assert_unharmed(server, before, faces, client=client(server))


@pytest.mark.parametrize("path", ["/train", "/tune"])
def test_training_requests_are_rate_limited(server, faces, path):
    before = written(server)
    greedy = client(server)
    answers = [greedy.post(path, files={"file": ("x.zip", b"not a zip")}) for _ in range(ATTEMPTS)]
    assert_limited(answers)
    assert written(server) == before
    envelope_of(client(server).post(path, files={"file": ("x.zip", b"not a zip")}), 400, "ARCHIVE_NOT_VALID")
