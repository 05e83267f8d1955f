"""The inbox's store and clustering in this process (real photos, real encodings): a full
inbox drops its oldest records, a disabled one keeps nothing, a 20-px face is refused by the
quality gate with its reason, and grouping everything again (exhaustive or through the faiss
index) finds the people of a stream of LFW photos.
"""
from __future__ import annotations

import io
from collections import Counter
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from conf.config import load_config
from datastructure.person import Dataset
from tests.conftest import app_over
from tests.support import TEST_CREDENTIALS, envelope_of
from utils.faces import Face, encodings_and_landmarks, face_library
from utils.inbox import Inbox
from utils.quality import face_quality

AUTH = {"Authorization": f"Bearer {TEST_CREDENTIALS['api_token']}"}


def predicted(client, path, name: str | None = None) -> list[dict]:
    answer = client.post("/predict", headers=AUTH, data={"file": (io.BytesIO(path.read_bytes()), name or path.name)})
    return answer.get_json()["response"]["faces"]


@pytest.fixture(scope="module")
def small_inbox(tmp_path_factory, faces):
    """An app whose inbox keeps 3 records, with Madonna enrolled."""
    app = app_over(tmp_path_factory.mktemp("small") / "data", inbox={"keep": 3})
    client = app.test_client()
    photo = faces / "celebrities" / "train" / "Madonna" / "1.jpg"
    envelope_of(client.post("/people/Madonna/photos", headers=AUTH,
                            data={"file": (io.BytesIO(photo.read_bytes()), "1.jpg")}), 201)
    return client


def test_a_full_inbox_drops_the_oldest_records(small_inbox, faces):
    photos = sorted((faces / "celebrities" / "val" / "Ben Afflek").glob("*.jpg"))
    ids = [face["record"] for photo in photos for face in predicted(small_inbox, photo)]
    assert len(ids) >= 4 and all(ids)
    kept = envelope_of(small_inbox.get("/faces", headers=AUTH), 200)["data"]
    assert kept["total"] == 3  # the enrolled photo's crop went first
    assert [record["id"] for record in kept["records"]] == ids[::-1][:3]
    envelope_of(small_inbox.get(f"/faces/{ids[0]}", headers=AUTH), 404, "NOT_FOUND")


def test_a_disabled_inbox_keeps_nothing(tmp_path, faces):
    app = app_over(tmp_path / "data", inbox={"enabled": False})
    client = app.test_client()
    photo = faces / "celebrities" / "train" / "Madonna" / "1.jpg"
    envelope_of(client.post("/people/Madonna/photos", headers=AUTH,
                            data={"file": (io.BytesIO(photo.read_bytes()), "1.jpg")}), 201)
    found = predicted(client, faces / "celebrities" / "val" / "Madonna" / "1.jpg")
    assert found and found[0]["record"] is None
    assert envelope_of(client.get("/faces", headers=AUTH), 200)["data"]["total"] == 0


def test_a_20_px_face_is_refused_with_its_reason(faces):
    """The pipeline's detectors find no face under ~36 px; dlib's HOG upsampled twice finds one
    of 20: its quality says too small, and enrolment (a zip's Dataset) refuses it."""
    photo = Image.open(faces / "lfw" / "people" / "Ariel_Sharon" / "Ariel_Sharon_0001.jpg").convert("RGB")
    small = photo.resize((42, 42), Image.LANCZOS)
    canvas = Image.new("RGB", (160, 120), (120, 120, 120))
    canvas.paste(small, (60, 40))
    array = np.asarray(canvas)
    boxes = face_library().face_locations(array, number_of_times_to_upsample=2)
    assert len(boxes) == 1
    top, right, bottom, left = boxes[0]
    assert 15 <= right - left <= 25
    encodings, landmarks = encodings_and_landmarks(array, boxes)
    quality = face_quality(array, boxes[0], landmarks[0], "hog")
    reason = quality.refusal(0.35)
    assert quality.width == right - left and reason and f"{quality.width} px wide" in reason
    dataset = Dataset(min_quality=0.35)
    dataset.add("Ariel_Sharon", "tiny.png", (Face(boxes[0], encodings[0], quality),))
    assert not dataset.encodings and dataset.skipped[0]["reason"] == reason


def lfw_stream(faces, people: int = 4, photos: int = 12):
    """Encodings of ``photos`` LFW photos of each of ``people`` people, shuffled, with their names."""
    from utils.faces import Options, decoded, faces_in

    folders = sorted(folder for folder in (faces / "lfw" / "people").iterdir()
                     if len(list(folder.glob("*.jpg"))) >= photos)[:people]
    encodings, names = [], []
    for folder in folders:
        for path in sorted(folder.glob("*.jpg"))[:photos]:
            found = faces_in(decoded(path.read_bytes(), Options()), Options())
            if len(found) == 1:
                encodings.append(found[0].encoding)
                names.append(folder.name)
    order = np.random.default_rng(0).permutation(len(names))
    return np.array(encodings)[order], [names[i] for i in order]


@pytest.mark.parametrize("index_min", [30_000, 16])
def test_grouping_everything_finds_the_people(faces, tmp_path, index_min):
    encodings, names = lfw_stream(faces)
    settings = load_config(overrides={"data_dir": str(tmp_path)}, environ={}).inbox
    inbox = Inbox(tmp_path, settings, min_quality=0.35, index_min=index_min, nprobe=64)
    clusters = inbox.clustered(encodings, [None] * len(encodings))
    groups: dict[int, list[str]] = {}
    for cluster, name in zip(clusters, names):
        if cluster is not None:
            groups.setdefault(cluster, []).append(name)
    majority = sum(Counter(members).most_common(1)[0][1] for members in groups.values())
    assert majority / sum(len(members) for members in groups.values()) >= 0.95  # purity
    assert sum(len(members) for members in groups.values()) >= 0.6 * len(names)
    assert len({Counter(members).most_common(1)[0][0] for members in groups.values()}) == 4


def test_a_record_never_fails_a_request(tmp_path):
    """A face the store cannot write (here: its folder is a file) is logged, not raised."""
    blocker = tmp_path / "blocked"
    blocker.write_text("not a folder")
    settings = load_config(overrides={"data_dir": str(tmp_path)}, environ={}).inbox
    inbox = Inbox(blocker, settings, min_quality=0.35)
    face = SimpleNamespace(box=(0, 10, 10, 0), encoding=np.zeros(128), quality=None)
    image = SimpleNamespace(array=np.zeros((10, 10, 3), dtype=np.uint8), scale=1.0)
    from utils.inbox import Source

    assert inbox.keep(image, [face], [None], Source("predict"), None) == [None]
