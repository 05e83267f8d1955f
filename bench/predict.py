"""Predict in process, photo bytes to names: the plain recipe against the engine a request runs.

What each side includes, timed per photo:

* plain: ``load_image_file`` -> ``face_locations`` (HOG, upsample 1, full resolution) ->
  ``face_encodings`` -> the example's KNN (kneighbors + predict, 0.6 threshold), in a child
  process (bench/plain_process.py): over dlib-bin as a user installs it ("plain"), and over
  our own dlib build ("plain on our dlib", which tells the pipeline's share from the build's);
* ours: ``Service.predict(bytes, save_annotated=False)``: the ACTIVE model check, decode
  (JPEG draft to <= 1600 px), detection on <= 800 px with its fallbacks, encoding, the
  classifier's decisions and the envelope. Drawing and saving the annotated JPEG is left
  out: the plain recipe has no counterpart (the serve section measures whole requests).

Each side learns from the same training folder with its own pipeline: knn/train for set (a),
celebrities/train for set (b). Rounds interleave the sides photo by photo, alternating which
goes first; a photo's time is its median over the rounds, a set's time the sum of those.
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from bench import Row, at_most, engine_config, plain, ratio, timed
from bench.plain_process import OWN_BUILD, PlainProcess, installed_python
from utils import archive

LARGE_FOLDERS = ("samples", "knn/train", "knn/test")
LARGE_PIXELS = 500_000
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
# Who is in each photo of set (a) (../shared/faces/README.md); a knn/train photo shows the
# person its folder names, and any other photo only people no training set knows.
PEOPLE = {
    "samples/32bit.png": {"obama"},
    "samples/biden.jpg": {"biden"},
    "samples/obama-1080p.jpg": {"obama"},
    "samples/obama.jpg": {"obama"},
    "samples/obama_partial_face.jpg": {"obama"},
    "samples/two_people.jpg": {"obama", "biden"},
    "knn/test/alex_lacamoire1.jpg": {"alex_lacamoire"},
    "knn/test/johnsnow_test1.jpg": {"kit_harington"},
    "knn/test/kit_with_rose.jpg": {"kit_harington", "rose_leslie"},
    "knn/test/obama1.jpg": {"obama"},
    "knn/test/obama_and_biden.jpg": {"obama", "biden"},
}


@dataclass
class Photo:
    name: str
    data: bytes
    people: frozenset
    pixels: int


@dataclass
class Side:
    """One side's figures on one photo set."""

    wall: list = field(default_factory=list)   # per photo, median of the rounds
    cpu: list = field(default_factory=list)
    names: list = field(default_factory=list)  # per photo, the names it gave its faces

    @property
    def faces_found(self) -> int:
        return sum(len(names) for names in self.names)

    def recognised(self, photos: list[Photo]) -> int:
        """Faces given their right name: per photo, the people in it named at least once."""
        return sum(len(photo.people & set(names)) for photo, names in zip(photos, self.names))

    def named_wrongly(self, photos: list[Photo]) -> int:
        return sum(sum(1 for name in names if name != plain.UNKNOWN and name not in photo.people)
                   for photo, names in zip(photos, self.names))


def photo(path: Path, name: str, people) -> Photo:
    with Image.open(path) as image:
        width, height = image.size
    return Photo(name, path.read_bytes(), frozenset(people), width * height)


def large_photos(faces: Path) -> list[Photo]:
    """Set (a): the photos of at least 0.5 MP in samples, knn/train and knn/test."""
    found = []
    for folder in LARGE_FOLDERS:
        for path in sorted((faces / folder).rglob("*")):
            if path.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            name = path.relative_to(faces).as_posix()
            people = {path.parent.name} if folder == "knn/train" else PEOPLE.get(name, set())
            candidate = photo(path, name, people)
            if candidate.pixels >= LARGE_PIXELS:
                found.append(candidate)
    return found


def val_photos(faces: Path) -> list[Photo]:
    """Set (b): celebrities/val, 5 small photos of each of the 5 people of celebrities/train."""
    root = faces / "celebrities" / "val"
    return [photo(path, path.relative_to(faces).as_posix(), {path.parent.name})
            for path in sorted(root.glob("*/*")) if path.suffix.lower() in IMAGE_SUFFIXES]


def plain_predictor(train_folder: Path, plain_side: PlainProcess):
    """A plain side: the example's KNN fitted on ``train_folder`` in its child process, as a
    bytes -> (names, wall, CPU) function timed in the child."""
    plain_side.fit([(item.person, item.data) for item in archive.photo_source(train_folder)])
    return plain_side.names


def ours_predictor(train_folder: Path, data_dir: Path):
    """Our side: a service over ``data_dir`` trained on ``train_folder`` (the engine's own
    train), as a bytes -> names function running the request's engine."""
    from utils.service import build_service

    service = build_service(engine_config(data_dir), console_log=False)
    service.train(train_folder)

    def names(data: bytes) -> list[str]:
        return [face["name"] for face in service.predict(data, save_annotated=False)["response"]["faces"]]

    return timed(names)


def compared(photos: list[Photo], sides: dict, rounds: int) -> dict[str, Side]:
    """Time every side (bytes -> (names, wall, CPU)) on every photo ``rounds`` times,
    interleaved; keep per-photo medians."""
    for function in sides.values():  # warm-up: first-call costs (lazy imports, allocations) are not timed
        function(photos[0].data)
    samples = {side: [[] for _ in photos] for side in sides}
    answers = {side: [None] * len(photos) for side in sides}
    order = list(sides)
    for round_number in range(rounds):
        for index, item in enumerate(photos):
            # alternate who goes first, so that neither side always meets warm caches
            for side in (order if (round_number + index) % 2 == 0 else order[::-1]):
                names, wall, cpu = sides[side](item.data)
                samples[side][index].append((wall, cpu))
                answers[side][index] = names
    result = {}
    for side in sides:
        result[side] = Side(wall=[statistics.median(w for w, _ in runs) for runs in samples[side]],
                            cpu=[statistics.median(c for _, c in runs) for runs in samples[side]],
                            names=answers[side])
    return result


def set_rows(label: str, photos: list[Photo], sides: dict[str, Side], target: float) -> list[Row]:
    p, o, same_build = sides["plain"], sides["ours"], sides[OWN_BUILD]
    wall = ratio(sum(o.wall), sum(p.wall))
    cpu = ratio(sum(o.cpu), sum(p.cpu))
    return [
        Row(f"predict {label}: total s (median of rounds)", sum(p.wall), sum(o.wall), wall,
            f"<= {target:.2g}", at_most(wall, target)),
        Row(f"predict {label}: total s, plain on our dlib build", sum(same_build.wall), sum(o.wall),
            ratio(sum(o.wall), sum(same_build.wall))),
        Row(f"predict {label}: CPU s", sum(p.cpu), sum(o.cpu), cpu),
        Row(f"predict {label}: faces found", p.faces_found, o.faces_found, None, ">= plain",
            o.faces_found >= p.faces_found, 0),
        Row(f"predict {label}: faces recognised (right name)", p.recognised(photos), o.recognised(photos),
            None, ">= plain", o.recognised(photos) >= p.recognised(photos), 0),
        Row(f"predict {label}: faces found / recognised, plain on our dlib build",
            f"{same_build.faces_found}/{same_build.recognised(photos)}",
            f"{o.faces_found}/{o.recognised(photos)}", None, ">= it",
            o.faces_found >= same_build.faces_found and o.recognised(photos) >= same_build.recognised(photos)),
        Row(f"predict {label}: faces given a wrong name", p.named_wrongly(photos), o.named_wrongly(photos),
            None, "", None, 0),
    ]


def set_details(photos: list[Photo], sides: dict[str, Side]) -> list[dict]:
    return [{"photo": item.name, "megapixels": round(item.pixels / 1e6, 2), "people": sorted(item.people),
             **{f"{side}_{key}": value for side, figures in sides.items() for key, value in (
                 ("s", round(figures.wall[index], 4)), ("cpu_s", round(figures.cpu[index], 4)),
                 ("names", figures.names[index]))}}
            for index, item in enumerate(photos)]


def predict_section(faces: Path, workdir: Path, rounds: int, say=print) -> tuple[list[Row], dict]:
    """Sets (a) and (b); return the table rows and the per-photo details."""
    rows, details = [], {"rounds": rounds, "includes": {
        "plain": "load_image_file(BytesIO) + face_locations(HOG, upsample 1, full res) + face_encodings "
                 "+ KNN kneighbors/predict (0.6), in a child process over dlib-bin (as installed)",
        OWN_BUILD: "the same, in a child process over the dlib ours uses",
        "ours": "Service.predict(bytes, save_annotated=False): model check + decode + detect + encode "
                "+ classifier decisions + envelope; no annotated JPEG"}}
    sets = (("(a) >=0.5 MP", large_photos(faces), faces / "knn" / "train", 1 / 3, "knn"),
            ("(b) celebrities/val", val_photos(faces), faces / "celebrities" / "train", 0.9, "celebrities"))
    walls, cpus = [], []
    with PlainProcess(installed_python()) as installed, PlainProcess() as own_build:
        details["dlib"] = {"plain": installed.dlib, OWN_BUILD: own_build.dlib}
        for label, photos, train_folder, target, data_name in sets:
            say(f"predict {label}: {len(photos)} photos, training the three sides on "
                f"{train_folder.relative_to(faces)} ...")
            sides = {"plain": plain_predictor(train_folder, installed),
                     OWN_BUILD: plain_predictor(train_folder, own_build),
                     "ours": ours_predictor(train_folder, workdir / data_name)}
            say(f"predict {label}: timing {rounds} interleaved rounds ...")
            measured = compared(photos, sides, rounds)
            rows += set_rows(label, photos, measured, target)
            details[label] = {"photos": len(photos), "train": str(train_folder.relative_to(faces)),
                              "per_photo": set_details(photos, measured)}
            walls.append(sum(measured["plain"].wall))
            cpus.append(sum(measured["plain"].cpu))
    # The plain side is single-threaded (dlib): on a free core it takes as long as its CPU
    # time, so more means other processes ran. Ours is not a witness: scikit-learn's
    # neighbour search runs OpenMP threads, which also burn CPU while they wait.
    details["plain_wall_over_cpu"] = round(sum(walls) / sum(cpus), 2)
    return rows, details
