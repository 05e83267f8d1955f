"""Drive a DeepStack server with deepstack-python (Home Assistant's deepstack_face client); print JSON.

Runs in the client's own environment (tests/clients.py), imports nothing of PyRecognizer.
deepstack-python 0.9 has no delete call: delete is posted as Viseron's and Double Take's
DeepStack clients post it (form field ``userid``, and ``api_key``).
    python deepstack_python.py HOST PORT API_KEY FACES_DIR PHOTOS_PER_PERSON
"""
import json
import sys
from pathlib import Path

import deepstack.core as ds
import requests

host, port, api_key, faces, per_person = sys.argv[1], int(sys.argv[2]), sys.argv[3], Path(sys.argv[4]), int(sys.argv[5])
train, val = faces / "celebrities" / "train", faces / "celebrities" / "val"
people = sorted(path.name for path in train.iterdir() if path.is_dir())

face = ds.DeepstackFace(ip=host, port=port, api_key=api_key, timeout=60)
out = {"list_before": face.get_registered_faces(), "registered": []}
for name in people:
    for path in sorted((train / name).iterdir())[:per_person]:
        try:
            out["registered"].append({"file": f"{name}/{path.name}", "message": face.register(name, path.read_bytes())})
        except ds.DeepstackException as exc:
            out["registered"].append({"file": f"{name}/{path.name}", "error": str(exc)})
out["list"] = face.get_registered_faces()
out["recognized"] = [{"expected": name, "file": path.name, "predictions": face.recognize(path.read_bytes())}
                     for name in people for path in sorted((val / name).iterdir())]
out["detected"] = face.detect((val / people[0] / sorted(p.name for p in (val / people[0]).iterdir())[0]).read_bytes())
try:
    ds.DeepstackFace(ip=host, port=port, api_key="not-the-token", timeout=60).get_registered_faces()
    out["wrong_key"] = "accepted"
except Exception as exc:  # the library raises KeyError reading "faces" of the 401 answer
    out["wrong_key"] = repr(exc)
refused = requests.post(f"http://{host}:{port}/v1/vision/face/list", data={"api_key": "not-the-token"}, timeout=60)
out["wrong_key_answer"] = {"status": refused.status_code, "body": refused.json()}  # what the library read
deleted = requests.post(f"http://{host}:{port}/v1/vision/face/delete", data={"userid": people[0], "api_key": api_key},
                        timeout=60)
out["delete"] = {"status": deleted.status_code, "body": deleted.json()}
out["list_after_delete"] = face.get_registered_faces()
print(json.dumps(out))
