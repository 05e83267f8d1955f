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

An .npz is a zip: before any array is inflated, the headers of the arrays used are read and
their declared shapes held to the training zips' limits (``limits.max_archive_bytes`` for
what they would take in memory, float64 encodings included; ``max_ratio`` for numeric
arrays and ``max_entries`` as for a zip), so that a few megabytes cannot ask for gigabytes
(ArchiveTooLarge, 413); other arrays are never inflated. JSON nested too deep, numbers too
large for a float and arrays of no dimension are refused the same way, never a traceback.
"""
from __future__ import annotations

import io
import json
import logging
import time
import zipfile
import zlib
from dataclasses import dataclass
from datetime import datetime

import numpy as np

from conf.config import Config
from datastructure.classifier import FaceClassifier
from datastructure.errors import ArchiveTooLarge, GalleryNotValid
from datastructure.model_store import ModelStore
from datastructure.names import names_problems, person_name, shown
from utils.archive import ArchiveLimits
from utils.training import classifier_params, library_versions

log = logging.getLogger(__name__)

DIMENSIONS = 128
SHOWN_ROWS = 5  # rows named per problem: enough to find them, short enough to read
ARRAYS = ("encodings", "names", "files")  # what an import reads; any other array is left deflated
FLOAT64 = 8
RATIO_MIN_BYTES = 1024**2  # as utils/archive.py: an entry under this cannot inflate to much


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


def declared_bytes(name: str, shape: tuple, dtype: np.dtype) -> int:
    """The memory an array of ``shape`` takes once read, and as float64 for the encodings."""
    count = 1
    for side in shape:
        count *= int(side)
    return count * (max(dtype.itemsize, FLOAT64) if name == "encodings" else dtype.itemsize)


def npy_header(entry) -> tuple[tuple, np.dtype]:
    """(shape, dtype) of the .npy file ``entry`` is reading, from its header alone."""
    version = np.lib.format.read_magic(entry)
    read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    shape, _, dtype = read(entry)
    return shape, dtype


def npz_arrays(data: bytes, limits: ArchiveLimits) -> dict:
    """The used arrays of an .npz, each inflated only once its header and zip entry fit ``limits``."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as stored:
            entries = stored.infolist()
            if len(entries) > limits.max_entries:
                raise ArchiveTooLarge(f"the .npz has {len(entries):,} arrays; the limit is {limits.max_entries:,}")
            used = {info.filename.removesuffix(".npy"): info for info in entries
                    if info.filename.removesuffix(".npy") in ARRAYS}
            total = 0
            for name, info in used.items():
                with stored.open(info) as entry:
                    shape, dtype = npy_header(entry)
                # Numbers compress about 1:1; names repeated once per photo, 4 bytes a character
                # (3 of them zero for Latin text), compress past any zip ratio honestly: their
                # declared shape, held to the memory budget below, bounds them instead.
                ratio = info.file_size / max(info.compress_size, 1)
                if dtype.kind != "U" and info.file_size >= RATIO_MIN_BYTES and ratio > limits.max_ratio:
                    raise ArchiveTooLarge(f"{name} inflates {ratio:,.0f} times; the limit is {limits.max_ratio:g}")
                if dtype.hasobject:
                    raise GalleryNotValid(
                        f"{name} is an object array: it would need unpickling, which is never done",
                        {"problems": [f"{name}: save it as numbers or strings, e.g. np.array(names, dtype=str)"]})
                total += declared_bytes(name, shape, dtype)
                if total > limits.max_archive_bytes:
                    raise ArchiveTooLarge(f"{name} declares a shape of {' x '.join(map(str, shape))} ({dtype}): "
                                          f"the arrays would take over {limits.max_archive_bytes:,} bytes "
                                          "(limits.max_archive_bytes)")
            arrays = {}
            for name, info in used.items():
                with stored.open(info) as entry:
                    arrays[name] = np.lib.format.read_array(entry, allow_pickle=False)
            return arrays
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, zlib.error) as exc:
        raise GalleryNotValid("the .npz file cannot be read", {"problems": [str(exc)[:200]]}) from None


def json_arrays(data: bytes, limits: ArchiveLimits) -> dict:
    """The arrays of a JSON gallery, unchecked."""
    try:
        document = json.loads(data)
    except RecursionError:
        raise GalleryNotValid("the JSON gallery is nested too deep",
                              {"problems": ['{"encodings": [[128 numbers], ...], "names": [...]}']}) from None
    except (UnicodeDecodeError, ValueError):
        raise GalleryNotValid("the gallery is neither an .npz file nor JSON",
                              {"problems": ["send an .npz (numpy.savez) or a JSON object with encodings and names"]}) from None
    if not isinstance(document, dict):
        raise GalleryNotValid("the JSON gallery must be an object", {"problems": ['{"encodings": [...], "names": [...]}']})
    rows = document.get("encodings")
    if isinstance(rows, list) and len(rows) * DIMENSIONS * FLOAT64 > limits.max_archive_bytes:
        raise ArchiveTooLarge(f"{len(rows):,} encodings would take over {limits.max_archive_bytes:,} bytes "
                              "(limits.max_archive_bytes)")
    arrays = {}
    for name in ARRAYS:
        if name in document:
            try:
                arrays[name] = np.array(document[name], dtype=float if name == "encodings" else None)
            except (TypeError, ValueError, OverflowError, RecursionError):
                raise GalleryNotValid(f"{name} is not a list of lists of numbers" if name == "encodings"
                                      else f"{name} is not a list of strings",
                                      {"problems": [f"{name}: n lists of {DIMENSIONS} numbers" if name == "encodings"
                                                    else f"{name}: one string per encoding"]}) from None
    return arrays


def raw_arrays(data: bytes, limits: ArchiveLimits = ArchiveLimits()) -> dict:
    """The arrays of an uploaded .npz or JSON gallery, unchecked; GalleryNotValid when it is
    neither, ArchiveTooLarge when it declares more than ``limits`` allow."""
    return npz_arrays(data, limits) if data[:4] == b"PK\x03\x04" else json_arrays(data, limits)


def shape_of(array: np.ndarray) -> str:
    """An array's shape as words: ``3 x 128``, or ``a single value`` for 0-d."""
    return " x ".join(map(str, array.shape)) or "a single value"


def checked_gallery(data: bytes, limits: ArchiveLimits = ArchiveLimits()) -> ImportedGallery:
    """Return the gallery in ``data``, or GalleryNotValid listing every problem found
    (ArchiveTooLarge past ``limits``, see the module's docstring)."""
    arrays = raw_arrays(data, limits)
    problems = [f"{name} is missing" for name in ("encodings", "names") if name not in arrays]
    if problems:
        raise GalleryNotValid("the gallery cannot be imported: " + "; ".join(problems), {"problems": problems})
    encodings, names = arrays["encodings"], arrays["names"]
    if encodings.dtype.kind not in "fiu":
        problems.append(f"encodings must be numbers, not {encodings.dtype}")
    elif encodings.ndim != 2 or encodings.shape[1] != DIMENSIONS or len(encodings) == 0:
        problems.append(f"encodings must be n x {DIMENSIONS} (face_recognition's encodings), not {shape_of(encodings)}")
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
        problems.append(f"names must be one string per encoding, not {names.dtype} of shape {shape_of(names)}")
    elif encodings.ndim == 0 or len(names) != len(encodings):
        problems.append(f"{len(names)} names for {len(encodings) if encodings.ndim else 0} encodings: give one name per encoding")
    else:
        for raw, found in names_problems(np.unique(names).tolist()).items():
            problems.append(f"name {shown(raw)!r} (rows {rows_shown(names == raw)}): {'; '.join(found)}")
    files = arrays.get("files")
    if files is None:
        files = np.array([f"imported/{row}" for row in range(len(names) if names.ndim == 1 else 0)])
    elif files.dtype.kind != "U" or files.shape != names.shape:
        problems.append(f"files, when given, must be one string per encoding, not {files.dtype} of shape {shape_of(files)}")
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
