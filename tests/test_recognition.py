"""The service on real photos: training, recognition, unknown faces, no face."""
import numpy as np
import pytest

from tests.support import make_config

pytestmark = pytest.mark.slow  # each test trains on, or runs two pipelines over, dozens of photos


def predicted(service, path) -> dict:
    return service.predict(path.read_bytes(), save_annotated=False)["response"]


@pytest.fixture(scope="session")
def knn_trained(faces, tmp_path_factory):
    from utils.service import build_service

    service = build_service(make_config(tmp_path_factory.mktemp("knn")), console_log=False)
    service.train(faces / "knn" / "train")
    return service


def test_training_reports_what_it_learned_and_skipped(trained):
    service, result = trained
    assert set(result["people"]) == {"Ben Afflek", "Elton John", "Jerry Seinfield", "Madonna", "Mindy Kaling"}
    assert result["photos"] + len(result["skipped"]) == 93
    two_faces = [item for item in result["skipped"] if item["file"].endswith("Jerry Seinfield/16.jpg")]
    assert two_faces and "2 faces" in two_faces[0]["reason"]
    assert result["metrics"]["test_photos"] > 0 and result["metrics"]["wrong"] == 0
    assert service.store.active_id() == result["model"]


def test_celebrities_val_recognised_without_a_wrong_name(trained, faces):
    service, _ = trained
    right = wrong = 0
    for photo in sorted((faces / "celebrities" / "val").glob("*/*")):
        answer = predicted(service, photo)
        names = set(answer["data"])
        right += photo.parent.name in names
        wrong += bool(names - {photo.parent.name})
    assert right >= 24 and wrong == 0


@pytest.mark.parametrize("photo", ["samples/unknown_face.jpg", "samples/bush_test.jpg", "samples/obama.jpg"])
def test_people_not_in_the_model_stay_unknown(trained, faces, photo):
    service, _ = trained
    answer = predicted(service, faces / photo)
    assert answer["error"] == "IMAGE_NOT_RECOGNIZED" and answer["data"] == {}
    assert answer["faces"] and all(face["name"] == "unknown" for face in answer["faces"])


def test_obama_and_biden_and_a_stranger(knn_trained, faces):
    answer = predicted(knn_trained, faces / "knn" / "test" / "obama_and_biden.jpg")
    assert sorted(face["name"] for face in answer["faces"]) == ["biden", "obama", "unknown"]
    assert set(answer["data"]) == {"obama", "biden"}
    for face in answer["faces"]:
        box = face["box"]
        assert 0 <= box["left"] < box["right"] and 0 <= box["top"] < box["bottom"]
        assert (face["confidence"] > 0.5) == (face["name"] != "unknown")


def test_two_known_people_in_one_photo(knn_trained, faces):
    answer = predicted(knn_trained, faces / "knn" / "test" / "kit_with_rose.jpg")
    assert set(answer["data"]) == {"kit_harington", "rose_leslie"}


def test_no_face_found(trained, faces):
    answer = predicted(trained[0], faces / "samples" / "no_face_test.png")
    assert answer["error"] == "NO_FACE_FOUND" and answer["status"] == "OK" and answer["faces"] == []


def test_annotated_copy_is_saved_under_a_random_name(trained, faces):
    service, _ = trained
    photo = (faces / "celebrities" / "val" / "Madonna" / "3.jpg").read_bytes()
    names = [service.predict(photo)["response"]["description"] for _ in range(2)]
    for name in names:
        saved = service.paths.annotated / name
        assert saved.is_file() and saved.read_bytes()[:3] == b"\xff\xd8\xff"
        assert len(name) == 36
    assert names[0] != names[1]  # one photo twice: two names nobody can derive from the photo


def test_boxes_are_in_the_original_photo_pixels(knn_trained, faces):
    """A 2 MP photo is detected on a small copy; boxes must still land on the full photo."""
    import face_recognition

    path = faces / "samples" / "biden.jpg"
    plain = face_recognition.face_locations(face_recognition.load_image_file(path))
    box = predicted(knn_trained, path)["faces"][0]["box"]
    top, right, bottom, left = plain[0]
    assert abs(box["top"] - top) < 40 and abs(box["left"] - left) < 40
    assert abs((box["right"] - box["left"]) - (right - left)) < 0.25 * (right - left)


def test_fast_pipeline_finds_every_face_the_plain_one_finds(faces):
    """Correctness of the speed levers: the same photos, at least the same faces, same people."""
    import face_recognition

    from utils.faces import decoded, faces_in

    photos = sorted([*faces.glob("samples/*"), *faces.glob("knn/test/*"), *faces.glob("knn/train/*/*")])
    for path in photos:
        image = face_recognition.load_image_file(path)
        plain = face_recognition.face_encodings(image, face_recognition.face_locations(image))
        ours = [face.encoding for face in faces_in(decoded(path.read_bytes()))]
        assert len(ours) >= len(plain), path.name
        for encoding in plain:  # each plain face has a twin among ours (same person's encoding)
            assert min(np.linalg.norm(np.array(ours) - encoding, axis=1)) < 0.2, path.name


def test_encodings_average_the_face_and_its_mirror_image(faces):
    """Every encoding is the mean of the face's and its mirror image's (utils/faces.py): the
    same photo always gets the same encoding, the unmirrored half is face_recognition's own
    encoding, and a photo and its mirror image come out near each other (0.06-0.10 apart
    where unmirrored encodings are 0.15-0.20 apart)."""
    from dataclasses import replace

    import face_recognition

    from utils.faces import Options, decoded, faces_in

    for name in ("obama.jpg", "bush_test.jpg", "two_people.jpg"):
        image = decoded((faces / "samples" / name).read_bytes())
        assert image.scale == 1  # boxes in the array's own pixels
        ours = faces_in(image)
        assert [f.encoding.tolist() for f in ours] == [f.encoding.tolist() for f in faces_in(image)], name
        plain = faces_in(image, Options(mirror=False))
        theirs = face_recognition.face_encodings(image.array, known_face_locations=[f.box for f in plain])
        assert np.array_equal(np.array([f.encoding for f in plain]), np.array(theirs)), name
        flipped = replace(image, array=np.ascontiguousarray(image.array[:, ::-1]))
        for mirror, at_most in ((True, 0.12), (False, None)):
            options = Options(mirror=mirror)
            apart = [min(np.linalg.norm(face.encoding - other.encoding) for other in faces_in(flipped, options))
                     for face in faces_in(image, options)]
            if mirror:
                assert max(apart) <= at_most, (name, apart)
                mirrored_apart = apart
            else:
                assert max(mirrored_apart) < 0.7 * min(apart), (name, mirrored_apart, apart)
    assert Options().signature() != Options(mirror=False).signature()  # the encoding cache keeps them apart
