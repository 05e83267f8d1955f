"""Real dlib encodings of ../shared/faces/lfw, encoded once and cached in .cache/ (gitignored):
the gallery bench mixes them into its synthetic galleries, so agreement with exact search is
measured on real faces, not only on the synthetic ones."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from bench import ROOT

CACHE = ROOT / ".cache" / "lfw-encodings.npz"


def lfw_encodings(faces: Path, cache: Path = CACHE, say=print) -> dict:
    """Return {"encodings" n x 128 float64, "names", "files", "strangers" m x 128} of the lfw
    folder: one encoding per photo where the pipeline finds exactly one face."""
    if cache.is_file():
        with np.load(cache, allow_pickle=False) as stored:
            return {name: stored[name] for name in stored.files}
    from utils.encoding import encoded_photos
    from utils.faces import Options

    people = sorted((faces / "lfw" / "people").glob("*/*.jpg"))
    strangers = sorted((faces / "lfw" / "strangers").glob("*.jpg"))
    say(f"encoding {len(people) + len(strangers)} lfw photos once (cached in {cache})")
    encodings, names, files, others = [], [], [], []
    for path, result in zip(people + strangers, encoded_photos((p.read_bytes() for p in people + strangers),
                                                                Options(), workers=1)):
        if len(result.faces) != 1:
            continue
        if path.parent.name == "strangers":
            others.append(result.faces[0].encoding)
        else:
            encodings.append(result.faces[0].encoding)
            names.append(path.parent.name)
            files.append(path.name)
    answer = {"encodings": np.array(encodings), "names": np.array(names), "files": np.array(files),
              "strangers": np.array(others)}
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cache, **answer)
    return answer


if __name__ == "__main__":
    from bench import faces_dir

    got = lfw_encodings(faces_dir())
    print({name: value.shape for name, value in got.items()})
