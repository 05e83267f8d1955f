"""Import a gallery of precomputed encodings: face_recognition users' ``known_face_encodings``
and ``known_face_names`` become a calibrated, active model without encoding a photo again.

Accepted files (read by content, not by extension):

* ``.npz`` (``numpy.savez``): ``encodings`` n x 128 floats, ``names`` n strings, optional
  ``files`` n strings (where each encoding came from). Read with ``allow_pickle=False``:
  an object array (what ``np.savez`` makes of a list of mixed objects) is refused, never
  unpickled. Users who keep their lists as a pickle convert them on their side (README).
* JSON: ``{"encodings": [[128 numbers], ...], "names": [...], "files": [...]}``.

Everything is checked before anything is written: the shape, finite values, names as
training zips' folder names are checked (datastructure/names.py), ``files`` if given;
each refusal (GalleryNotValid, 422) lists every problem found, with the first rows concerned.
"""
from __future__ import annotations

import io
import json
import logging
import time
import zipfile
from dataclasses import dataclass
from datetime import datetime

import numpy as np

from conf.config import Config
from datastructure.classifier import FaceClassifier
from datastructure.errors import GalleryNotValid
from datastructure.model_store import ModelStore
from datastructure.names import names_problems, person_name, shown
from utils.training import classifier_params, library_versions

log = logging.getLogger(__name__)

DIMENSIONS = 128
SHOWN_ROWS = 5  # rows named per problem: enough to find them, short enough to read


@dataclass(frozen=True)
class ImportedGallery:
    """A checked gallery: float64 encodings, normalised names, file names."""

    encodings: np.ndarray
    names: np.ndarray
    files: np.ndarray


def rows_shown(mask: np.ndarray) -> str:
    """Return the first rows ``mask`` marks, for a refusal's reason (``3, 7, 9 and 12 more``)."""
    rows = np.flatnonzero(mask)
    more = f" and {len(rows) - SHOWN_ROWS} more" if len(rows) > SHOWN_ROWS else ""
    return ", ".join(str(int(row)) for row in rows[:SHOWN_ROWS]) + more


def raw_arrays(data: bytes) -> dict:
    """The arrays of an uploaded .npz or JSON gallery, unchecked; GalleryNotValid when it is neither."""
    if data[:4] == b"PK\x03\x04":
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as stored:
                arrays = {}
                for name in stored.files:
                    try:
                        arrays[name] = stored[name]
                    except ValueError:
                        raise GalleryNotValid(
                            f"{name} is an object array: it would need unpickling, which is never done",
                            {"problems": [f"{name}: save it as numbers or strings, e.g. np.array(names, dtype=str)"]}) from None
                return arrays
        except (zipfile.BadZipFile, OSError, EOFError) as exc:
            raise GalleryNotValid("the .npz file cannot be read", {"problems": [str(exc)]}) from None
    try:
        document = json.loads(data)
    except (UnicodeDecodeError, ValueError):
        raise GalleryNotValid("the gallery is neither an .npz file nor JSON",
                              {"problems": ["send an .npz (numpy.savez) or a JSON object with encodings and names"]}) from None
    if not isinstance(document, dict):
        raise GalleryNotValid("the JSON gallery must be an object", {"problems": ['{"encodings": [...], "names": [...]}']})
    arrays = {}
    for name in ("encodings", "names", "files"):
        if name in document:
            try:
                arrays[name] = np.array(document[name], dtype=float if name == "encodings" else None)
            except (TypeError, ValueError):
                raise GalleryNotValid(f"{name} is not a list of lists of numbers",
                                      {"problems": [f"{name}: n lists of {DIMENSIONS} numbers"]}) from None
    return arrays


def checked_gallery(data: bytes) -> ImportedGallery:
    """Return the gallery in ``data``, or GalleryNotValid listing every problem found."""
    arrays = raw_arrays(data)
    problems = [f"{name} is missing" for name in ("encodings", "names") if name not in arrays]
    if problems:
        raise GalleryNotValid("the gallery cannot be imported: " + "; ".join(problems), {"problems": problems})
    encodings, names = arrays["encodings"], arrays["names"]
    if encodings.dtype.kind not in "fiu":
        problems.append(f"encodings must be numbers, not {encodings.dtype}")
    elif encodings.ndim != 2 or encodings.shape[1] != DIMENSIONS or len(encodings) == 0:
        problems.append(f"encodings must be n x {DIMENSIONS} (face_recognition's encodings), not {' x '.join(map(str, encodings.shape))}")
    else:
        encodings = encodings.astype(np.float64)
        bad = ~np.isfinite(encodings).all(axis=1)
        if bad.any():
            problems.append(f"{int(bad.sum())} encodings hold NaN or infinite values (rows {rows_shown(bad)})")
    if names.dtype.kind == "S":
        try:
            names = np.char.decode(names, "utf-8")
        except UnicodeDecodeError:
            problems.append("names are bytes that are not UTF-8")
    if names.dtype.kind != "U" or names.ndim != 1:
        problems.append(f"names must be one string per encoding, not {names.dtype} of shape {names.shape}")
    elif len(names) != len(encodings):
        problems.append(f"{len(names)} names for {len(encodings)} encodings: give one name per encoding")
    else:
        for raw, found in names_problems(np.unique(names).tolist()).items():
            problems.append(f"name {shown(raw)!r} (rows {rows_shown(names == raw)}): {'; '.join(found)}")
    files = arrays.get("files")
    if files is None:
        files = np.array([f"imported/{row}" for row in range(len(names))])
    elif files.dtype.kind != "U" or files.shape != names.shape:
        problems.append(f"files, when given, must be one string per encoding, not {files.dtype} of shape {files.shape}")
    if problems:
        raise GalleryNotValid(f"the gallery cannot be imported: {problems[0]}"
                              + (f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""),
                              {"problems": problems})
    normal = {raw: person_name(raw) for raw in np.unique(names).tolist()}
    return ImportedGallery(encodings, np.array([normal[raw] for raw in names.tolist()]), files.astype(str))


def import_gallery(gallery: ImportedGallery, config: Config, store: ModelStore, *, source_name: str = "import",
                   progress=lambda *_: None) -> dict:
    """Fit (calibrate) a classifier on ``gallery``, save it as a new model, make it active."""
    started = time.time()
    total = len(gallery.names)
    progress(0, total, "fitting the classifier")
    classifier = FaceClassifier(**classifier_params(config)).fit(gallery.encodings, gallery.names)
    people, counts = np.unique(gallery.names, return_counts=True)
    metadata = {
        "kind": "import", "created": datetime.now().isoformat(timespec="seconds"), "source": source_name,
        "people": {str(name): int(count) for name, count in zip(people, counts)}, "photos": total, "skipped": [],
        # no photo is held out of an import (a second fit at 10^6 would double it): the
        # calibration's leave-one-out figures say how it decides
        "metrics": {"accuracy": None, "recognised": classifier.calibration_.get("recognised"),
                    "strangers_accepted": classifier.calibration_.get("strangers_accepted")},
        "params": classifier.get_params(), "threshold": classifier.threshold_, "ratio": classifier.ratio_,
        "calibration": classifier.calibration_, "versions": library_versions(),
        "fit_seconds": round(time.time() - started, 1),
    }
    progress(total, total, "saving the model")
    with store.changing():
        model_id = store.save(classifier, gallery.encodings, gallery.names, gallery.files, metadata)
        store.activate(model_id)
    log.info("model %s imported: %d encodings of %d people in %.1f s", model_id, total, len(people), time.time() - started)
    return {"model": model_id, "people": len(people), "photos": total, "threshold": classifier.threshold_,
            "ratio": classifier.ratio_, "indexed": bool(classifier.gallery_.index.approximate),
            "seconds": round(time.time() - started, 1)}
