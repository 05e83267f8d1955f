"""Prediction: photo bytes -> who is in it, as the envelope the REST API and the CLI share."""
from __future__ import annotations

import logging
import secrets
import threading
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from datastructure.errors import ClassifierNotLoaded, ModelNotValid
from datastructure.classifier import UNKNOWN, Decision
from datastructure.model_store import Model, ModelStore
from datastructure.response import envelope
from utils.faces import Face, Options, decoded, faces_in
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
            "runner_up_distance": decision.runner_up_distance, "box": box_dict(face.box)}


def annotated_image(image: DecodedImage, faces: list[dict]) -> bytes:
    """Return a JPEG of the photo with a box and a name drawn for every face."""
    picture = Image.fromarray(image.array)
    draw = ImageDraw.Draw(picture)
    width = max(2, round(max(picture.size) / 400))
    font = ImageFont.load_default(size=max(12, round(max(picture.size) / 45)))
    for face in faces:
        box = face["box"]
        top, right, bottom, left = (round(box[key] / image.scale) for key in ("top", "right", "bottom", "left"))
        if right <= left or bottom <= top:
            continue  # nothing to draw around
        colour = UNKNOWN_COLOUR if face["name"] == UNKNOWN else KNOWN_COLOUR
        label = face["name"] if face["name"] == UNKNOWN else f"{face['name']} {face['confidence']:.0%}"
        draw.rectangle((left, top, right, bottom), outline=colour, width=width)
        text_box = draw.textbbox((left, bottom), label, font=font)
        draw.rectangle((left, bottom, max(right, text_box[2] + 2 * width), text_box[3] + 2 * width), fill=colour)
        draw.text((left + width, bottom + width), label, fill=(255, 255, 255), font=font)
    return encode_jpeg(np.asarray(picture))


def saved_upload(folder: Path, data: bytes) -> str:
    """Save an annotated image under a random name the service alone can generate."""
    name = f"{secrets.token_hex(16)}.jpg"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(data)
    return name


def recognised(data: bytes, active: ActiveModel, options: Options):
    """Return (model, decoded photo, faces, one Decision per face) for one photo;
    ClassifierNotLoaded when there is no model yet."""
    model = active.current()
    image = decoded(data, options)
    faces = faces_in(image, options)
    decisions = model.classifier.decisions(np.array([face.encoding for face in faces])) if faces else []
    return model, image, faces, decisions


def faces_and_decisions(data: bytes, active: ActiveModel, options: Options) -> list[tuple[Face, Decision | None]]:
    """Return every face of one photo with the active model's decision, None for every face
    while no model exists (nobody is enrolled yet: every face is unknown). The DeepStack and
    CompreFace APIs answer so before the first enrolment, where /predict answers 503."""
    try:
        _, _, faces, decisions = recognised(data, active, options)
    except ClassifierNotLoaded:
        faces = faces_in(decoded(data, options), options)
        decisions = [None] * len(faces)
    return list(zip(faces, decisions))


def prediction(data: bytes, active: ActiveModel, options: Options, uploads: Path | None) -> dict:
    """Return the prediction envelope for one photo; the annotated copy goes to ``uploads``."""
    model, image, faces, decisions = recognised(data, active, options)
    if not faces:
        return envelope({}, description="no face found in the photo", error="NO_FACE_FOUND",
                        faces=[], model=model.id)
    reports = [face_report(face, decision) for face, decision in zip(faces, decisions)]
    names: dict[str, float] = {}
    for report in reports:
        if report["name"] != UNKNOWN:
            names[report["name"]] = max(report["confidence"], names.get(report["name"], 0.0))
    description = saved_upload(uploads, annotated_image(image, reports)) if uploads else ""
    return envelope(names, description=description, error=None if names else "IMAGE_NOT_RECOGNIZED",
                    faces=reports, model=model.id)
