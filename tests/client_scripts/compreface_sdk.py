"""Drive a CompreFace server with the official compreface-sdk, as its users do; print JSON.

Runs in the SDK's own environment (tests/clients.py), imports nothing of PyRecognizer.
    python compreface_sdk.py URL PORT API_KEY FACES_DIR PHOTOS_PER_PERSON
"""
import json
import sys
from pathlib import Path

from compreface import CompreFace

domain, port, api_key, faces, per_person = sys.argv[1], sys.argv[2], sys.argv[3], Path(sys.argv[4]), int(sys.argv[5])
train, val = faces / "celebrities" / "train", faces / "celebrities" / "val"
people = sorted(path.name for path in train.iterdir() if path.is_dir())

compre_face = CompreFace(domain, port, {"limit": 0, "det_prob_threshold": 0.8, "prediction_count": 1,
                                        "face_plugins": "calculator,age,gender", "status": True})
recognition = compre_face.init_face_recognition(api_key)
verification = compre_face.init_face_verification(api_key)
detection = compre_face.init_face_detection(api_key)
face_collection, subjects = recognition.get_face_collection(), recognition.get_subjects()
out = {"subjects_before": subjects.list(), "subject_added": [subjects.add(name) for name in people], "added": []}

for name in people:
    for path in sorted((train / name).iterdir())[:per_person]:
        out["added"].append({"file": f"{name}/{path.name}", "answer": face_collection.add(image_path=str(path), subject=name)})

out["subjects"] = subjects.list()
out["faces"] = face_collection.list()
out["recognized"] = [{"expected": name, "file": path.name, "answer": recognition.recognize(image_path=str(path))}
                     for name in people for path in sorted((val / name).iterdir())]
first, second = people[0], people[1]
same = verification.verify(str(sorted((val / first).iterdir())[0]), str(sorted((train / first).iterdir())[0]))
different = verification.verify(str(sorted((val / first).iterdir())[0]), str(sorted((train / second).iterdir())[0]))
out["verify"] = {"same": same, "different": different}
out["detect"] = detection.detect(str(sorted((val / second).iterdir())[0]))
example = next(item["answer"]["image_id"] for item in out["added"] if "image_id" in item["answer"] and item["file"].startswith(first))
out["verify_example"] = {"same": face_collection.verify(str(sorted((val / first).iterdir())[1]), example),
                         "different": face_collection.verify(str(sorted((val / second).iterdir())[1]), example)}

# deletions: one example by id, all examples of a subject, a subject, a rename, then everything
one = next(item["answer"] for item in out["added"] if "image_id" in item["answer"] and item["file"].startswith(people[2]))
out["delete_by_id"] = face_collection.delete(one["image_id"])
out["delete_all_of_subject"] = face_collection.delete_all(people[3])
out["delete_subject"] = subjects.delete(people[4])
out["rename"] = subjects.update(people[0], people[0] + " Renamed")
out["subjects_after_deletes"] = subjects.list()
out["delete_all_subjects"] = subjects.delete_all()
out["subjects_end"] = subjects.list()
print(json.dumps(out))
