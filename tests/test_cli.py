"""The command line: the same engine and models as the service, JSON envelopes on stdout."""
import json
import subprocess
import sys

import pytest

from tests.support import ROOT


pytestmark = pytest.mark.e2e  # every test runs `main.py` as a subprocess


def cli(data_dir, *args, check=True):
    result = subprocess.run([sys.executable, "main.py", "--data-dir", str(data_dir), *map(str, args)],
                            cwd=ROOT, capture_output=True, text=True, timeout=600)
    if check:
        assert result.returncode == 0, result.stdout + result.stderr
    return result


def envelopes(stdout: str) -> list[dict]:
    return [json.loads(line)["response"] for line in stdout.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def trained_dir(faces, tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("cli")
    result = cli(data_dir, "train", faces / "knn" / "train")
    (answer,) = envelopes(result.stdout)
    assert answer["status"] == "OK" and answer["data"]["photos"] == 9
    assert "encoding photos" in result.stderr and "9/9" in result.stderr  # tqdm on stderr
    return data_dir, answer["data"]["model"]


def test_predict_prints_one_envelope_per_image(trained_dir, faces):
    data_dir, model = trained_dir
    photos = [faces / "knn" / "test" / "obama_and_biden.jpg", faces / "samples" / "no_face_test.png"]
    first, second = envelopes(cli(data_dir, "predict", *photos).stdout)
    assert sorted(face["name"] for face in first["faces"]) == ["biden", "obama", "unknown"]
    assert first["model"] == model and (data_dir / "uploads" / first["description"]).is_file()
    assert second["error"] == "NO_FACE_FOUND"


def test_predict_reports_unreadable_files_and_fails(trained_dir, tmp_path):
    data_dir, _ = trained_dir
    text = tmp_path / "notes.jpg"
    text.write_text("not a photo")
    result = cli(data_dir, "predict", text, tmp_path / "missing.jpg", check=False)
    assert result.returncode == 1
    assert [answer["error"] for answer in envelopes(result.stdout)] == ["FILE_NOT_VALID", "MISSING_FILE"]


def test_models_lists_the_trained_model_as_active(trained_dir):
    data_dir, model = trained_dir
    (answer,) = envelopes(cli(data_dir, "models").stdout)
    assert answer["active"] == model and answer["data"][0]["id"] == model


def test_training_a_folder_without_faces_fails_clearly(faces, tmp_path):
    person = tmp_path / "photos" / "Nobody"
    person.mkdir(parents=True)
    (person / "a.png").write_bytes((faces / "samples" / "no_face_test.png").read_bytes())
    result = cli(tmp_path / "data", "train", tmp_path / "photos", check=False)
    (answer,) = envelopes(result.stdout)
    assert result.returncode == 1 and answer["error"] == "DATASET_NOT_VALID"
    assert answer["data"]["skipped"][0]["reason"] == "no face found"


def test_people_enrol_list_and_forget_from_the_shell(faces, tmp_path):
    train = faces / "knn" / "train"
    (enrolled,) = envelopes(cli(tmp_path, "enrol", "obama", train / "obama" / "obama.jpg", train / "obama" / "obama2.jpg").stdout)
    assert enrolled["status"] == "OK" and len(enrolled["data"]["added"]) == 2 and enrolled["model"]
    (obama,) = envelopes(cli(tmp_path, "people", "OBAMA").stdout)
    assert [photo["source"] for photo in obama["data"]["photos"]] == ["obama.jpg", "obama2.jpg"]
    (forgotten,) = envelopes(cli(tmp_path, "forget", "obama").stdout)  # the only person: the model goes too
    assert forgotten["data"]["erased"]["photos"] == 2 and forgotten["data"]["erased"]["models_deleted"] == [enrolled["model"]]
    assert not list((tmp_path / "dataset" / "model").glob("2*"))
