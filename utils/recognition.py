"""Prediction: photo bytes -> who is in it, as the envelope the REST API and the CLI share."""
from __future__ import annotations

import logging
import threading
from dataclasses import replace
from typing import Callable

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from datastructure.annotated import AnnotatedCopies
from datastructure.errors import ClassifierNotLoaded, ModelNotValid
from datastructure.classifier import UNKNOWN, Decision
from datastructure.model_store import Model, ModelStore
from datastructure.response import envelope
from utils.faces import Face, Options, decoded, faces_in, resized, settled_faces
from utils.images import DecodedImage, encode_jpeg

log = logging.getLogger(__name__)

KNOWN_COLOUR, UNKNOWN_COLOUR = (46, 204, 113), (231, 76, 60)


class ActiveModel:
    """The model the service predicts with, following the store's ACTIVE pointer.

    Every process sharing the model folder notices an activation on its next request: the
    pointer is a few bytes to read, and a model is only (re)loaded when it changes. A model
    that fails verification is refused once and the previous one keeps serving.
    """

    def __init__(self, store: ModelStore):
        self.store = store
        self._model: Model | None = None
        self._refused: str | None = None
        self._lock = threading.Lock()

    def current(self) -> Model:
        """Return the active model; ClassifierNotLoaded when there is none yet."""
        wanted = self.store.active_id()
        if wanted is None and self._model is not None:
            with self._lock:  # the last person was removed: nobody is known any more
                self._model = None
        model = self._model
        if wanted and (model is None or model.id != wanted) and wanted != self._refused:
            with self._lock:
                if self._model is None or self._model.id != wanted:
                    self._switch(wanted)
            model = self._model
        if model is None:
            raise ClassifierNotLoaded("no model is loaded yet: train one first (POST /train)")
        return model

    def _switch(self, wanted: str) -> None:
        try:
            self._model = self.store.load(wanted)
            self._refused = None
            log.info("loaded model %s", wanted)
        except ModelNotValid as exc:
            self._refused = wanted
            log.error("refusing model %s, keeping %s: %s", wanted,
                      self._model.id if self._model else "none", exc.description)
            if self._model is None:
                self._model = self.store.load_active()

    def loaded_id(self) -> str | None:
        """Return the id of the model in memory (None before the first load), without reloading."""
        return self._model.id if self._model else None


def box_dict(box) -> dict:
    """Return a face box (top, right, bottom, left), in the photo's own pixels, as the envelopes name it."""
    top, right, bottom, left = (int(side) for side in box)
    return {"top": top, "right": right, "bottom": bottom, "left": left}


def face_report(face: Face, decision) -> dict:
    """Return the per-face part of the envelope."""
    return {"name": decision.name, "confidence": decision.confidence, "distance": decision.distance,
            "candidate": decision.candidate, "runner_up": decision.runner_up,
            "runner_up_distance": decision.runner_up_distance, "box": box_dict(face.box),
            "quality": face.quality.as_dict() if face.quality is not None else None}


# What an anonymous caller learns of each face: whether it is someone the model knows, and only
# then who. The candidate, runner-up and distances would list the enrolled people and let
# anyone measure how close a face of their choice comes to each of them.
PUBLIC_FACE_KEYS = ("name", "confidence", "box")


def public_answer(answer: dict) -> dict:
    """Return the prediction envelope ``answer`` as an anonymous caller may see it: per face
    only its name (``unknown`` unless recognised), confidence and box."""
    response = answer["response"]
    if "faces" in response:
        response["faces"] = [{key: face[key] for key in PUBLIC_FACE_KEYS} for face in response["faces"]]
    return answer


def annotated_image(image: DecodedImage, faces: list[dict], max_side: int = 1024) -> bytes:
    """Return a JPEG of the photo, at most ``max_side`` pixels long, with a box and a name drawn
    for every face (a 6000 px upload must not become a 20 MB copy)."""
    pixels, shrunk = resized(image.array, max_side)
    picture = Image.fromarray(pixels)
    draw = ImageDraw.Draw(picture)
    width = max(2, round(max(picture.size) / 400))
    font = ImageFont.load_default(size=max(12, round(max(picture.size) / 45)))
    for face in faces:
        box = face["box"]
        top, right, bottom, left = (round(box[key] / image.scale / shrunk) for key in ("top", "right", "bottom", "left"))
        if right <= left or bottom <= top:
            continue  # nothing to draw around
        colour = UNKNOWN_COLOUR if face["name"] == UNKNOWN else KNOWN_COLOUR
        label = face["name"] if face["name"] == UNKNOWN else f"{face['name']} {face['confidence']:.0%}"
        draw.rectangle((left, top, right, bottom), outline=colour, width=width)
        text_box = draw.textbbox((left, bottom), label, font=font)
        draw.rectangle((left, bottom, max(right, text_box[2] + 2 * width), text_box[3] + 2 * width), fill=colour)
        draw.text((left + width, bottom + width), label, fill=(255, 255, 255), font=font)
    return encode_jpeg(np.asarray(picture))


def saved_copy(copies: AnnotatedCopies | None, image: DecodedImage, reports: list[dict],
               max_side: int, encodings: np.ndarray | None = None) -> tuple[str, dict]:
    """Write the annotated copy (and its faces' ``encodings`` beside it, for a forget to find);
    return its name ("" when none) and what the envelope says of it.

    A copy that cannot be written (a full disk) does not fail the prediction: the names are
    the answer, the copy is a convenience."""
    if copies is None:
        return "", {"saved": False, "reason": "no annotated copy was asked for"}
    if not copies.enabled:
        return "", {"saved": False, "reason": "annotated copies are turned off (annotated.keep or annotated.max_age is 0)"}
    try:
        return copies.save(annotated_image(image, reports, max_side), encodings), {"saved": True}
    except OSError as exc:
        log.warning("annotated copy not written: %s", exc.strerror or exc)
        return "", {"saved": False, "reason": f"the annotated copy could not be written: {exc.strerror or 'I/O error'}"}


def options_for(classifier, options: Options, gallery_under: int) -> Options:
    """Return the predict pipeline for a model: ``options``, with the CNN detection fallback
    (run only where HOG finds no face) when the model learned from fewer than
    ``gallery_under`` photos. A small gallery's user uploads few photos and each one lost is
    felt; a large gallery keeps the cheap path."""
    if len(classifier.labels_) < gallery_under:
        return replace(options, cnn_fallback=True)
    return options


def recognised(data: bytes, active: ActiveModel, options: Options, gallery_under: int = 0):
    """Return (model, decoded photo, faces, one Decision per face) for one photo;
    ClassifierNotLoaded when there is no model yet. ``gallery_under``: see ``options_for``."""
    model = active.current()
    options = options_for(model.classifier, options, gallery_under)
    image = decoded(data, options)
    faces, decisions = decided(faces_in(image, options, defer_mirror=True), model.classifier, options)
    return model, image, faces, decisions


# keep(image, faces, decisions, model id) -> a face record id per face (None: not kept): the
# inbox's hook (utils/inbox.py), given by the service for an authorised caller's photo
Keeper = Callable[[DecodedImage, list, list, "str | None"], list]


def decided(faces: list[Face], classifier, options: Options) -> tuple[list[Face], list[Decision]]:
    """Return (faces with final encodings, one Decision each) of faces from ``faces_in(...,
    defer_mirror=True)``: the mirror pass runs only for faces whose name it could change."""
    faces, _ = settled_faces(faces, classifier.decision_is_certain, options)
    return faces, classifier.decisions(np.array([face.encoding for face in faces])) if faces else []


def faces_and_decisions(data: bytes, active: ActiveModel, options: Options,
                        gallery_under: int = 0, keep: Keeper | None = None) -> list[tuple[Face, Decision | None]]:
    """Return every face of one photo with the active model's decision, None for every face
    while no model exists (nobody is enrolled yet: every face is unknown). The DeepStack and
    CompreFace APIs answer so before the first enrolment, where /predict answers 503."""
    try:
        model, image, faces, decisions = recognised(data, active, options, gallery_under)
        model_id = model.id
    except ClassifierNotLoaded:
        image, model_id = decoded(data, options), None
        faces = faces_in(image, options)
        decisions = [None] * len(faces)
    if keep is not None:
        keep(image, faces, decisions, model_id)
    return list(zip(faces, decisions))


def prediction(data: bytes, active: ActiveModel, options: Options, copies: AnnotatedCopies | None,
               max_side: int = 1024, gallery_under: int = 0, keep: Keeper | None = None) -> dict:
    """Return the prediction envelope for one photo; the annotated copy goes to ``copies`` (None:
    no copy); ``gallery_under``: see ``options_for``; ``keep``: the inbox's hook (each face
    answers with its record id)."""
    model, image, faces, decisions = recognised(data, active, options, gallery_under)
    if not faces:
        return envelope({}, description="no face found in the photo", error="NO_FACE_FOUND",
                        faces=[], model=model.id, annotated={"saved": False, "reason": "no face found"})
    reports = [face_report(face, decision) for face, decision in zip(faces, decisions)]
    if keep is not None:
        for report, record in zip(reports, keep(image, faces, decisions, model.id)):
            report["record"] = record
    names: dict[str, float] = {}
    for report in reports:
        if report["name"] != UNKNOWN:
            names[report["name"]] = max(report["confidence"], names.get(report["name"], 0.0))
    description, annotated = saved_copy(copies, image, reports, max_side, np.array([face.encoding for face in faces]))
    return envelope(names, description=description, error=None if names else "IMAGE_NOT_RECOGNIZED",
                    faces=reports, model=model.id, annotated=annotated)
