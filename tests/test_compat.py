"""The DeepStack / CodeProject.AI and CompreFace dialects (api/deepstack.py, api/compreface.py).

The end-to-end tests drive the real client libraries from PyPI, each in its own environment
(tests/clients.py), against a real server process; one more replays Double Take's requests
as its source sends them. The in-process tests pin each dialect's error shapes and access.
"""
from __future__ import annotations

import base64
import io
import json

import pytest
import requests
from PIL import Image

from tests.clients import run_client
from tests.conftest import app_over
from tests.support import TEST_CREDENTIALS

PEOPLE = ["Ben Afflek", "Elton John", "Jerry Seinfield", "Madonna", "Mindy Kaling"]


def blank_jpeg() -> bytes:
    """A photo of a grey wall: no face."""
    buffer = io.BytesIO()
    Image.new("RGB", (320, 240), (128, 128, 128)).save(buffer, "JPEG")
    return buffer.getvalue()


@pytest.fixture
def server(server_factory, faces):
    """A real server process (gunicorn, as `main.py serve` runs it) with nobody enrolled."""
    return server_factory()


def client_output(*args) -> dict:
    completed = run_client(*args)
    assert completed.returncode == 0, completed.stderr[-3000:]
    return json.loads(completed.stdout)


# ---------------------------------------------------------------------------------------
# Real clients against a real server

@pytest.mark.e2e
@pytest.mark.slow
def test_compreface_sdk_adds_recognises_verifies_and_deletes(server, faces):
    out = client_output("compreface", "compreface_sdk.py", "http://127.0.0.1", server.port, server.token, faces, 5)

    assert out["subjects_before"] == {"subjects": []}
    assert out["subject_added"] == [{"subject": name} for name in PEOPLE]
    added = [item for item in out["added"] if "image_id" in item["answer"]]
    for item in out["added"]:
        if "image_id" not in item["answer"]:  # a photo without exactly one face, in CompreFace's words
            assert item["answer"]["code"] in (28, 31), item
    assert len(added) >= 15, out["added"]
    assert all(item["answer"]["subject"] == item["file"].split("/")[0] for item in added)
    assert out["subjects"] == {"subjects": PEOPLE}
    assert out["faces"]["total_elements"] == len(added)
    assert {face["image_id"] for face in out["faces"]["faces"]} <= {item["answer"]["image_id"] for item in added}

    right = 0
    for item in out["recognized"]:
        if item["answer"].get("code") == 28:  # no face found: CompreFace's answer, and a miss
            assert set(item["answer"]) == {"message", "code"}
            continue
        assert "plugins_versions" in item["answer"], item
        face = item["answer"]["result"][0]
        assert set(face["box"]) == {"probability", "x_min", "y_min", "x_max", "y_max"}
        assert len(face["embedding"]) == 128 and "execution_time" in face
        subject = face["subjects"][0]
        right += subject["subject"] == item["expected"] and subject["similarity"] > 0
    assert right >= 23, [(i["expected"], i["answer"].get("result", i["answer"])) for i in out["recognized"]]

    same = out["verify"]["same"]["result"][0]["face_matches"][0]["similarity"]
    different = out["verify"]["different"]["result"][0]["face_matches"][0]["similarity"]
    assert same > 0.5 > different, out["verify"]
    assert len(out["detect"]["result"]) == 1 and out["detect"]["result"][0]["box"]["probability"] == 1.0
    same = out["verify_example"]["same"]["result"][0]["similarity"]
    different = out["verify_example"]["different"]["result"][0]["similarity"]
    assert same > 0.5 > different, out["verify_example"]

    removed = out["delete_by_id"]
    assert removed["subject"] == PEOPLE[2] and removed["image_id"] in {i["answer"]["image_id"] for i in added}
    assert out["delete_all_of_subject"]["deleted"] == sum(i["answer"]["subject"] == PEOPLE[3] for i in added)
    assert out["delete_subject"] == {"subject": PEOPLE[4]}
    assert out["rename"] == {"updated": True}
    assert out["subjects_after_deletes"] == {"subjects": sorted([PEOPLE[0] + " Renamed", PEOPLE[1], PEOPLE[2]])}
    assert out["delete_all_subjects"] == {"deleted": 3}
    assert out["subjects_end"] == {"subjects": []}


@pytest.mark.e2e
@pytest.mark.slow
def test_deepstack_python_registers_recognises_lists_and_deletes(server, faces):
    out = client_output("deepstack", "deepstack_python.py", "127.0.0.1", server.port, server.token, faces, 3)

    assert out["list_before"] == []
    messages = [item.get("message") for item in out["registered"]]
    assert messages.count("face added") == len(PEOPLE), out["registered"]
    assert sum(message == "face updated" for message in messages) >= 5, out["registered"]
    assert sorted(out["list"]) == PEOPLE
    right = 0
    for item in out["recognized"]:
        for prediction in item["predictions"]:
            assert {"userid", "confidence", "x_min", "y_min", "x_max", "y_max"} <= set(prediction)
        best = max(item["predictions"], key=lambda p: p["confidence"], default={"userid": None})
        right += best["userid"] == item["expected"]
    assert right >= 23, [(i["expected"], i["predictions"]) for i in out["recognized"]]
    assert out["detected"] and out["detected"][0]["confidence"] == 1.0
    assert out["wrong_key"] == "KeyError('faces')"  # the library reads "faces" of any answer
    assert out["wrong_key_answer"] == {"status": 401, "body": {"success": False, "error": "Incorrect api key", "duration": 0}}
    assert out["delete"] == {"status": 200, "body": {"success": True, "duration": 0}}
    assert sorted(out["list_after_delete"]) == PEOPLE[1:]


@pytest.mark.e2e
def test_double_take_request_shapes(server, faces):
    """Double Take's DeepStack, CodeProject.AI ("aiserver") and CompreFace detectors, request by request."""
    train, val = faces / "celebrities" / "train" / "Madonna", faces / "celebrities" / "val" / "Madonna"
    photo = sorted(val.iterdir())[0].read_bytes()
    url, key = server.url, server.token

    def multipart(field, data, **fields):
        return {"files": {field: ("image.jpg", data, "image/jpeg")}, "data": fields, "timeout": 60}

    # deepstack.js train / recognize / remove (api_key only when configured)
    for path in sorted(train.iterdir())[:3]:
        trained = requests.post(f"{url}/v1/vision/face/register", **multipart("image", path.read_bytes(), userid="madonna", api_key=key))
        assert trained.status_code == 200 and trained.json()["success"] is True, trained.text
    answer = requests.post(f"{url}/v1/vision/face/recognize", **multipart("image", photo, api_key=key)).json()
    assert answer["success"] is True and answer["predictions"][0]["userid"] == "madonna", answer
    assert 0 < answer["predictions"][0]["confidence"] <= 1
    # aiserver.js sends no api_key: recognition follows /predict's policy (open here), training needs the token
    answer = requests.post(f"{url}/v1/vision/face/recognize", **multipart("image", photo)).json()
    assert answer["predictions"][0]["userid"] == "madonna", answer
    refused = requests.post(f"{url}/v1/vision/face/register", **multipart("image", photo, userid="madonna"))
    assert refused.status_code == 401 and refused.json()["success"] is False
    removed = requests.post(f"{url}/v1/vision/face/delete", data={"userid": "madonna", "api_key": key}, timeout=60)
    assert removed.json() == {"success": True, "duration": 0}
    answer = requests.post(f"{url}/v1/vision/face/recognize", **multipart("image", photo, api_key=key)).json()
    assert [p["userid"] for p in answer["predictions"]] == ["unknown"], answer

    # compreface.js train / recognize (face_plugins "undefined" when unset) / remove
    headers = {"x-api-key": key}
    for path in sorted(train.iterdir())[:3]:
        trained = requests.post(f"{url}/api/v1/recognition/faces", params={"subject": "Madonna"}, headers=headers,
                                files={"file": ("image.jpg", path.read_bytes(), "image/jpeg")}, timeout=60)
        assert trained.status_code == 201 and trained.json()["subject"] == "Madonna", trained.text
    recognised = requests.post(f"{url}/api/v1/recognition/recognize?face_plugins=undefined", headers=headers,
                               params={"det_prob_threshold": 0.8}, timeout=60,
                               files={"file": ("image.jpg", photo, "image/jpeg")})
    face = recognised.json()["result"][0]
    assert face["subjects"][0]["subject"] == "Madonna" and face["subjects"][0]["similarity"] > 0.4
    assert set(face) == {"box", "subjects"}
    no_face = requests.post(f"{url}/api/v1/recognition/recognize?face_plugins=undefined", headers=headers,
                            params={"det_prob_threshold": 0.8}, files={"file": ("a.jpg", blank_jpeg(), "image/jpeg")})
    assert no_face.json()["code"] == 28 and "result" not in no_face.json()
    removed = requests.delete(f"{url}/api/v1/recognition/faces", params={"subject": "Madonna"}, headers=headers)
    assert removed.json() == {"deleted": 3}


# ---------------------------------------------------------------------------------------
# In-process: error shapes, access, nobody enrolled yet

def photo_of(faces, person="Madonna") -> bytes:
    return sorted((faces / "celebrities" / "val" / person).iterdir())[0].read_bytes()


def test_deepstack_answers_unknown_faces_before_anyone_is_enrolled(client, faces):
    answer = client.post("/v1/vision/face/recognize", data={"image": (io.BytesIO(photo_of(faces)), "a.jpg"),
                                                             "api_key": "", "min_confidence": "0.45"})
    assert answer.status_code == 200
    body = answer.get_json()
    assert body["success"] is True and len(body["predictions"]) == 1
    assert body["predictions"][0]["userid"] == "unknown" and body["predictions"][0]["confidence"] == 0


def test_deepstack_errors_in_its_own_shape(client, faces):
    def post(path, **data):
        return client.post(path, data=data)

    cases = [
        (post("/v1/vision/face/recognize"), 400),  # no image
        (post("/v1/vision/face/recognize", image=(io.BytesIO(b"not a photo"), "a.jpg")), 400),
        (post("/v1/vision/face/recognize", image=(io.BytesIO(photo_of(faces)), "a.jpg"), min_confidence="high"), 400),
        (post("/v1/vision/face/recognize", image=(io.BytesIO(photo_of(faces)), "a.jpg"), min_confidence="1.5"), 400),
        (post("/v1/vision/face/recognize", image=(io.BytesIO(photo_of(faces)), "a.jpg"), api_key="wrong"), 401),
        (post("/v1/vision/face/list"), 401),
        (post("/v1/vision/face/list", api_key="wrong"), 401),
        (post("/v1/vision/face/register", api_key="test-api-token-0123456789"), 400),  # no userid
        (post("/v1/vision/face/register", userid="x", api_key="test-api-token-0123456789",
              image=(io.BytesIO(blank_jpeg()), "wall.jpg")), 400),  # no face to register
        (post("/v1/vision/face/match", image1=(io.BytesIO(photo_of(faces)), "a.jpg"),
              image2=(io.BytesIO(blank_jpeg()), "b.jpg")), 400),
    ]
    for answer, status in cases:
        body = answer.get_json()
        assert answer.status_code == status, (status, body)
        assert body["success"] is False and isinstance(body["error"], str) and body["error"], body
    assert client.post("/v1/vision/face/list", data={"api_key": "test-api-token-0123456789"}).get_json() == {
        "success": True, "faces": [], "duration": 0}


def test_compreface_errors_in_its_own_shape(client, faces):
    key = {"x-api-key": "test-api-token-0123456789"}
    upload = lambda data: {"file": (io.BytesIO(data), "a.jpg")}  # noqa: E731
    cases = [
        (client.get("/api/v1/recognition/subjects"), 401, 20),
        (client.get("/api/v1/recognition/faces", headers={"x-api-key": "wrong"}), 401, 1),
        (client.post("/api/v1/recognition/recognize", headers=key), 400, 5),
        (client.post("/api/v1/recognition/recognize", headers=key, data=upload(blank_jpeg())), 400, 28),
        (client.post("/api/v1/recognition/recognize", headers=key, data=upload(b"<html>")), 400, 21),
        (client.post("/api/v1/recognition/recognize?limit=-1", headers=key, data=upload(photo_of(faces))), 400, 26),
        (client.post("/api/v1/recognition/recognize?det_prob_threshold=2", headers=key, data=upload(photo_of(faces))), 400, 26),
        (client.post("/api/v1/recognition/recognize", headers=key, json={"file": "%%%"}), 400, 26),
        (client.post("/api/v1/recognition/faces", headers=key, data=upload(photo_of(faces))), 400, 33),
        (client.post("/api/v1/recognition/faces?subject=Wall", headers=key, data=upload(blank_jpeg())), 400, 28),
        (client.delete("/api/v1/recognition/faces/0123456789abcdef", headers=key), 404, 11),
        (client.post("/api/v1/recognition/faces/delete", headers=key, json={"not": "a list"}), 400, 26),
        (client.post("/api/v1/verification/verify", headers=key, data={"source_image": (io.BytesIO(photo_of(faces)), "a.jpg"),
                                                                       "target_image": (io.BytesIO(blank_jpeg()), "b.jpg")}), 400, 28),
    ]
    for answer, status, number in cases:
        body = answer.get_json()
        assert (answer.status_code, body.get("code")) == (status, number), body
        assert set(body) == {"message", "code"} and body["message"], body


def test_compreface_recognises_base64_json_before_anyone_is_enrolled(client, faces):
    encoded = base64.b64encode(photo_of(faces)).decode()
    answer = client.post("/api/v1/recognition/recognize?face_plugins=calculator,age&status=true&limit=1",
                         json={"file": encoded})
    assert answer.status_code == 200, answer.get_json()
    body = answer.get_json()
    assert len(body["result"]) == 1 and body["result"][0]["subjects"] == []
    assert len(body["result"][0]["embedding"]) == 128 and "age" not in body["result"][0]
    assert body["plugins_versions"]["calculator"]
    detected = client.post("/api/v1/detection/detect", json={"file": encoded}).get_json()
    assert detected["result"][0]["box"]["probability"] == 1.0 and "subjects" not in detected["result"][0]


def test_both_dialects_follow_the_predict_access_policy(tmp_path, faces):
    client = app_over(tmp_path / "data", security={"predict_requires_token": True}).test_client()
    photo = photo_of(faces)
    refused = client.post("/v1/vision/face/recognize", data={"image": (io.BytesIO(photo), "a.jpg")})
    assert refused.status_code == 401 and refused.get_json()["success"] is False
    allowed = client.post("/v1/vision/face/recognize", data={"image": (io.BytesIO(photo), "a.jpg"),
                                                             "api_key": "test-api-token-0123456789"})
    assert allowed.status_code == 200
    refused = client.post("/api/v1/detection/detect", data={"file": (io.BytesIO(photo), "a.jpg")})
    assert refused.status_code == 401 and refused.get_json()["code"] == 20
    allowed = client.post("/api/v1/detection/detect", data={"file": (io.BytesIO(photo), "a.jpg")},
                          headers={"Authorization": "Bearer test-api-token-0123456789"})
    assert allowed.status_code == 200


def test_openapi_lists_both_dialects(client):
    paths = client.get("/openapi.json").get_json()["paths"]
    for path in ("/v1/vision/face", "/v1/vision/face/recognize", "/v1/vision/face/register", "/v1/vision/face/list",
                 "/v1/vision/face/delete", "/v1/vision/face/match", "/api/v1/recognition/recognize",
                 "/api/v1/recognition/faces", "/api/v1/recognition/faces/{image_id}", "/api/v1/recognition/faces/delete",
                 "/api/v1/recognition/subjects", "/api/v1/recognition/subjects/{subject}", "/api/v1/detection/detect",
                 "/api/v1/verification/verify"):
        assert path in paths, path


def test_too_large_requests_answer_in_each_dialect(tmp_path, faces):
    client = app_over(tmp_path / "data", limits={"max_content_length": 4096}).test_client()
    photo = photo_of(faces)
    assert len(photo) > 4096
    deepstack = client.post("/v1/vision/face/recognize", data={"image": (io.BytesIO(photo), "a.jpg")})
    assert deepstack.status_code == 413 and deepstack.get_json()["success"] is False
    compreface = client.post("/api/v1/recognition/recognize", data={"file": (io.BytesIO(photo), "a.jpg")})
    assert compreface.status_code == 413 and compreface.get_json()["code"] == 26


def test_compreface_pages_filters_and_bulk_deletes_examples(client, faces):
    key = {"x-api-key": "test-api-token-0123456789"}
    ids = {}
    for person, count in (("Madonna", 3), ("Elton John", 2)):
        for path in sorted((faces / "celebrities" / "train" / person).iterdir())[:count]:
            answer = client.post(f"/api/v1/recognition/faces?subject={person}", headers=key,
                                 data={"file": (io.BytesIO(path.read_bytes()), path.name)})
            assert answer.status_code == 201, answer.get_json()
            ids.setdefault(person, []).append(answer.get_json()["image_id"])
    page = client.get("/api/v1/recognition/faces?page=1&size=2", headers=key).get_json()
    assert (page["page_number"], page["page_size"], page["total_pages"], page["total_elements"]) == (1, 2, 3, 5)
    assert len(page["faces"]) == 2
    madonna = client.get("/api/v1/recognition/faces?subject=Madonna", headers=key).get_json()
    assert sorted(face["image_id"] for face in madonna["faces"]) == sorted(ids["Madonna"])
    removed = client.post("/api/v1/recognition/faces/delete", headers=key,
                          json=[ids["Madonna"][0], ids["Elton John"][1], "ffffffffffffffff"]).get_json()
    assert removed == [{"image_id": ids["Madonna"][0], "subject": "Madonna"},
                       {"image_id": ids["Elton John"][1], "subject": "Elton John"}]
    assert client.get("/api/v1/recognition/faces", headers=key).get_json()["total_elements"] == 3
    assert client.get("/api/v1/recognition/subjects", headers=key).get_json() == {"subjects": ["Elton John", "Madonna"]}


PROTECTED = [
    ("POST", "/v1/vision/face/register"), ("POST", "/v1/vision/face/list"), ("POST", "/v1/vision/face/delete"),
    ("POST", "/api/v1/recognition/faces?subject=Madonna"), ("GET", "/api/v1/recognition/faces"),
    ("DELETE", "/api/v1/recognition/faces?subject=Madonna"), ("DELETE", "/api/v1/recognition/faces/0123456789abcdef"),
    ("POST", "/api/v1/recognition/faces/delete"), ("GET", "/api/v1/recognition/subjects"),
    ("POST", "/api/v1/recognition/subjects"), ("DELETE", "/api/v1/recognition/subjects"),
    ("PUT", "/api/v1/recognition/subjects/Madonna"), ("DELETE", "/api/v1/recognition/subjects/Madonna"),
]


def test_enrolment_and_removal_need_the_token_in_both_dialects(client):
    for method, path in PROTECTED:
        answer = client.open(path, method=method, data={"userid": "Madonna"} if path.startswith("/v1/") else None)
        body = answer.get_json()
        assert answer.status_code == 401, (method, path, body)
        if path.startswith("/v1/"):
            assert body["success"] is False and body["error"], (method, path, body)
        else:
            assert set(body) == {"message", "code"} and body["code"] == 20, (method, path, body)


def test_wrong_keys_in_either_dialect_count_as_wrong_tokens(tmp_path):
    """Guessing the token through api_key or x-api-key is held back as bearer guesses are."""
    limits = {"login": "10 per minute", "predict": "300 per minute", "train": "30 per hour", "wrong_token": "3 per minute"}
    client = app_over(tmp_path / "data", security={"rate_limits": limits}).test_client()
    statuses = [client.post("/v1/vision/face/list", data={"api_key": f"guess-{n}"}).status_code for n in range(3)]
    statuses += [client.get("/api/v1/recognition/subjects", headers={"x-api-key": f"guess-{n}"}).status_code
                 for n in range(3)]
    assert statuses[:3] == [401] * 3 and statuses[3:] == [429] * 3, statuses
    body = client.get("/api/v1/recognition/subjects", headers={"x-api-key": TEST_CREDENTIALS["api_token"]}).get_json()
    assert set(body) == {"message", "code"}, body  # even the right key waits, in CompreFace's shape
    body = client.post("/v1/vision/face/list", data={"api_key": TEST_CREDENTIALS["api_token"]}).get_json()
    assert body["success"] is False and "too many" in body["error"], body
