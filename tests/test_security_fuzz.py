"""Schemathesis against /openapi.json of a real server, with every one of its checks: no answer
is a 5xx, every status, media type, header and body is the one the spec documents, data the
spec refuses is refused, data it allows is accepted, methods it does not list answer 405, and
every answer of the REST API is the JSON envelope (each dialect's answers its own shape).

A spec cannot say "a photo with one face" of a file field, nor list the Unicode characters
the name rule refuses (unassigned code points): a schema-valid upload or name that the service
refuses for its content is accepted as such only when the refusal is one of CONTENT_REFUSALS
and, for a name, datastructure/names.py refuses that very name. Everything else a check finds
fails the test.

Bounded twice: a few examples per operation and generation mode, and a time budget for the
whole run, shared equally by the operations. Half the cases carry the
API token, so the protected operations are fuzzed past the 401 too. Deleting models is
fuzzed with ids of models that do not exist (the pattern is \\d{8}_\\d{6}; the real ones are
checked still there at the end).
"""
from __future__ import annotations

import inspect
import json
import time
from collections import Counter
from urllib.parse import unquote

import pytest
import schemathesis
from schemathesis.checks import CHECKS, load_all_checks
from schemathesis.core.failures import FailureGroup
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from tests.hostile import install_models, server_config, start_server, stopped
from datastructure.names import name_problems, person_name
from utils.camera_sources import url_problems
from tests.support import envelope_of

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.usefixtures("faces")]

BUDGET_SECONDS = 45
EXAMPLES = 30


@pytest.fixture(scope="module")
def server(tmp_path_factory, hostile_models):
    data_dir = tmp_path_factory.mktemp("fuzz")
    models = hostile_models
    install_models(data_dir, models)
    # cameras added by fuzzed POSTs are kept but not watched (no supervisor dialling random hosts);
    # an /events stream lasts a second, not a budget's share
    server = start_server(data_dir, server_config(limits={"max_content_length": 1024 * 1024}, faces={"workers": 1},
                                                  cameras={"start": "never", "sse_seconds": 1}))
    yield server, models
    stopped(server)


def header(response, name: str) -> str:
    """A header of a schemathesis Response (lower-case keys, list values)."""
    return (response.headers.get(name.lower()) or [""])[0]


# The DeepStack and CompreFace dialects answer in their own shapes (api/deepstack.py,
# api/compreface.py). Their operations that remove people are fuzzed without the token only,
# as deleting models is fuzzed with ids that do not exist: the installed models must survive.
DIALECT_REMOVALS = {("POST", "/v1/vision/face/delete"), ("DELETE", "/api/v1/recognition/faces"),
                    ("DELETE", "/api/v1/recognition/faces/{image_id}"), ("POST", "/api/v1/recognition/faces/delete"),
                    ("DELETE", "/api/v1/recognition/subjects"), ("DELETE", "/api/v1/recognition/subjects/{subject}"),
                    ("PUT", "/api/v1/recognition/subjects/{subject}")}


def check_dialect_answer(where: str, path: str, response) -> None:
    """A DeepStack answer has ``success`` (and ``error`` when false); a CompreFace error is
    ``{"message", "code"}``; both are JSON."""
    problem = f"{where} answered {response.status_code} outside its dialect: {response.text[:300]!r}"
    assert header(response, "Content-Type").startswith("application/json"), problem
    body = response.json()
    if path.startswith("/v1/vision/"):
        assert body["success"] is (response.status_code < 400), problem
        if response.status_code >= 400:
            assert isinstance(body["error"], str) and body["error"], problem
    elif response.status_code >= 400:
        assert set(body) == {"message", "code"} and isinstance(body["code"], int), problem


load_all_checks()
# every check schemathesis has; the stateful ones (use_after_free, ensure_resource_availability)
# pass on single calls, the others judge each answer
ALL_CHECKS = {check.__name__: check for check in CHECKS.get_all() if inspect.isfunction(check)}
ACCEPTANCE = "positive_data_acceptance"
# What the service answers when a schema-valid upload's content is not what the operation
# takes (not an image, not a zip, no face...): envelope codes, and the dialects' messages.
CONTENT_REFUSALS = {"FILE_NOT_VALID", "ARCHIVE_NOT_VALID", "DATASET_NOT_VALID", "GALLERY_NOT_VALID",
                    "VIDEO_NOT_VALID", "VIDEO_FORMAT_NOT_SUPPORTED", "NO_VIDEO_STREAM", "NO_FACE_FOUND"}
DIALECT_CONTENT_WORDS = ("image", "face")


def uploads_files(case) -> bool:
    """Whether the operation takes a file (a binary form field)."""
    return '"binary"' in json.dumps(case.operation.definition.raw.get("requestBody", {}))


NAME_FIELDS = ("name", "subject", "userid")


def sent_names(case) -> list[str]:
    """The person names of the request, wherever an API takes them (path, query, JSON or form)."""
    path = {key: unquote(value) for key, value in (case.path_parameters or {}).items() if isinstance(value, str)}
    places = [path, case.query or {}, case.body if isinstance(case.body, dict) else {}]
    return [place[field] for place in places for field in NAME_FIELDS if isinstance(place.get(field), str)]


def refused_for_its_content(case, response) -> bool:
    """Whether a schema-valid request was refused for what the spec cannot describe: the content
    of an uploaded file, or a name that the name rule itself refuses."""
    if response.status_code in (400, 422) and any(name_problems(person_name(name)) for name in sent_names(case)):
        return True  # the name rule itself refuses that name
    url = case.body.get("url") if case.path.startswith("/cameras") and isinstance(case.body, dict) else None
    if response.status_code == 422 and isinstance(url, str) and url_problems(url, allow_files=False):
        return True  # the camera URL rule itself refuses that URL (no host, a port out of range...)
    try:
        body = response.json()
    except ValueError:
        return False
    if isinstance(body, dict) and isinstance(body.get("response"), dict):
        return body["response"].get("error") in CONTENT_REFUSALS and uploads_files(case)
    message = str(body.get("error") or body.get("message") or "") if isinstance(body, dict) else ""
    return uploads_files(case) and any(word in message.lower() for word in DIALECT_CONTENT_WORDS)


# gunicorn's limit on a request line (limit_request_line): longer ones are answered 414 by the app
REQUEST_LINE_LIMIT = 4094 - len("POST  HTTP/1.1") - 64


def validated(case, response, headers: dict, seen: Counter) -> None:
    """Run every check on ``response``; an acceptance failure stands unless the refusal was for
    the content (see refused_for_its_content)."""
    case.validate_response(response, checks=[check for name, check in ALL_CHECKS.items() if name != ACCEPTANCE],
                           headers=headers)
    try:
        case.validate_response(response, checks=[ALL_CHECKS[ACCEPTANCE]], headers=headers)
    except (AssertionError, FailureGroup):
        if not refused_for_its_content(case, response):
            raise
        seen["refused for the content"] += 1


def check_answer(case, response) -> None:
    where = f"{case.method} {case.formatted_path}"
    assert response.status_code < 500, (where, response.status_code, response.text[:500])
    assert header(response, "X-Content-Type-Options") == "nosniff", where
    if case.path.startswith(("/v1/vision/", "/api/v1/")):  # 404 and 405 included
        check_dialect_answer(where, case.path, response)
        return
    if case.path in ("/uploads/{name}", "/cameras/{name}/snapshot", "/cameras/{name}/crops/{crop}") \
            and response.status_code == 200:
        assert header(response, "Content-Type") == "image/jpeg", where
        return
    if case.path == "/events" and response.status_code == 200:
        assert header(response, "Content-Type").startswith("text/event-stream"), where
        return
    if case.method.upper() == "GET" and case.operation.definition.raw.get("tags") == ["Pages"]:
        assert header(response, "Content-Type").startswith("text/html"), where  # a page, at an API path
        return
    problem = f"{where} answered {response.status_code} without the envelope: " \
              f"{header(response, 'Content-Type')} {response.text[:300]!r}"
    assert header(response, "Content-Type").startswith("application/json"), problem
    try:
        body = response.json()
    except ValueError:
        raise AssertionError(problem) from None
    assert isinstance(body, dict) and set(body) == {"response"}, problem
    assert {"status", "error", "description", "data", "date"} <= set(body["response"]), problem
    assert (body["response"]["status"] == "KO") == (response.status_code >= 400), problem
    if response.status_code >= 400:
        assert body["response"]["error"], problem


def test_fuzz_the_rest_api(server):
    server, (_, model_ids) = server
    schema = schemathesis.openapi.from_url(server.url + "/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 10
    sent = {"cases": 0, "operations": set()}
    seen = Counter()
    failures = []

    for operation in operations:
        # each operation gets its share of the budget, so a slow machine fuzzes every one of
        # them less deeply rather than the last ones not at all
        deadline = time.monotonic() + BUDGET_SECONDS / len(operations)
        for mode in (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE):
            @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
                      phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
            @given(case=operation.as_strategy(generation_mode=mode), with_token=st.booleans())
            def run(case, with_token):
                if time.monotonic() > deadline and f"{case.method} {case.path}" in sent["operations"]:
                    return
                with_token = with_token and (case.method.upper(), case.path) not in DIALECT_REMOVALS
                # the token as each API's clients send it (the spec's scheme for the operation)
                key = {"x-api-key": server.token} if case.path.startswith("/api/v1/") else \
                    {"Authorization": f"Bearer {server.token}"}
                headers = key if with_token else {}
                response = case.call(base_url=server.url, headers=headers, timeout=60)
                sent["cases"] += 1
                sent["operations"].add(f"{case.method} {case.path}")
                check_answer(case, response)
                if response.status_code == 414 and len(response.request.url) > REQUEST_LINE_LIMIT:
                    seen["request line too long (414, in the route's shape)"] += 1  # no spec states a URL's length
                    return
                validated(case, response, headers, seen)

            try:
                run()
            except (AssertionError, FailureGroup, ExceptionGroup) as exc:  # keep going: report every operation that fails
                failures.append(f"{operation.method.upper()} {operation.path} ({mode}): {str(exc)[:800]}")
            except Exception as exc:  # noqa: BLE001 - e.g. a case the client cannot even send
                if "Unsatisfiable" in type(exc).__name__:
                    continue
                raise

    print(f"schemathesis: {sent['cases']} cases over {len(sent['operations'])} operations, checks "
          f"{', '.join(ALL_CHECKS)}; {len(failures)} failures; {dict(seen)}")
    assert not failures, "\n\n".join(failures)
    assert sent["cases"] >= 100, sent
    assert len(sent["operations"]) == len(operations), sent["operations"]
    # Still up, still serving the same model, and no model was lost to the fuzzed DELETEs.
    health = envelope_of(server.get("/health"), 200)["data"]
    assert health["model"] == model_ids[-1]
    listed = [entry["id"] for entry in envelope_of(server.get("/models", headers={"Accept": "application/json"}), 200)["data"]]
    assert set(model_ids) <= set(listed)
