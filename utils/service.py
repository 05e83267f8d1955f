"""The service one process runs, built once from the configuration: ``Service`` is the one
name of that object (``api.context.current_service()`` in a request).

``create_app`` and the CLI both start here, so the web service and ``main.py`` train and
predict with the same folders, models and settings.
"""
from __future__ import annotations

import logging
import logging.handlers
import shutil
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from conf.config import Config, Paths
from datastructure.annotated import AnnotatedCopies
from datastructure.errors import (ClusteringInProgress, DatasetNotValid, InsufficientStorage, PyRecognizerError,
                                  VideoInProgress)
from datastructure.model_store import ModelStore
from utils.cameras import CameraStore
from utils.faces import Options, face_library
from utils.importing import ImportedGallery, import_gallery
from utils.inbox import Inbox, Source
from utils.images import configure_pillow
from utils.jobs import JobRunner
from utils.people import People
from utils.recognition import ActiveModel, faces_and_decisions, prediction
from utils.training import train_model
from utils.video import VideoInfo, VideoLimits, VideoOptions, opened_video, video_timeline

log = logging.getLogger(__name__)


def configure_logging(log_file: Path, level: str, *, console: bool = True) -> None:
    """Log to ``log/pyrecognizer.log`` (rotated) and stderr, once per process and file."""
    root = logging.getLogger()
    root.setLevel(level)
    if any(getattr(handler, "baseFilename", None) == str(log_file) for handler in root.handlers):
        return
    formatter = logging.Formatter("%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s")
    handlers: list[logging.Handler] = [logging.handlers.RotatingFileHandler(log_file, maxBytes=10 << 20, backupCount=5)]
    if console and not any(type(handler) is logging.StreamHandler for handler in root.handlers):
        handlers.append(logging.StreamHandler())
    for handler in handlers:
        handler.setFormatter(formatter)
        root.addHandler(handler)


@dataclass
class Service:
    """Folders, models, jobs and face settings of one running service."""

    config: Config
    paths: Paths
    store: ModelStore
    active: ActiveModel
    jobs: JobRunner
    predict_options: Options
    annotated: AnnotatedCopies
    video_jobs: JobRunner
    video_options: VideoOptions
    video_limits: VideoLimits
    cameras: CameraStore
    inbox: Inbox
    inbox_jobs: JobRunner

    @property
    def people(self) -> People:
        """The people engine over this service's store (enrol, remove, rename, forget)."""
        return People(self.store, self.config, self.paths, training_running=self.jobs.running,
                      check_disk=lambda: self.require_free_disk("to enrol"), on_enrolled=self.inbox.keep_enrolled)

    def predict(self, data: bytes, *, save_annotated: bool = True, source: Source | None = None) -> dict:
        """Return the prediction envelope for one photo, with an annotated copy if ``save_annotated``;
        with a ``source``, each face is kept as a face record (``keeper``)."""
        return prediction(data, self.active, self.predict_options, self.annotated if save_annotated else None,
                          self.config.annotated.max_side, self.config.faces.cnn_fallback_gallery_under,
                          keep=self.keeper(source))

    def keeper(self, source: Source | None):
        """The inbox's hook for faces from ``source`` (None: nothing is kept, e.g. the CLI)."""
        if source is None:
            return None
        return lambda image, faces, decisions, model_id: self.inbox.keep(image, faces, decisions, source, model_id)

    def free_disk(self) -> int:
        """Return the bytes free for the data folder."""
        return shutil.disk_usage(self.paths.root).free

    def low_on_disk(self) -> bool:
        """True when the data folder has less free space than ``limits.min_free_disk``."""
        return self.free_disk() < self.config.limits.min_free_disk

    def require_free_disk(self, purpose: str) -> None:
        """Refuse (507) what would write to a data folder that is (nearly) full."""
        if self.low_on_disk():
            raise InsufficientStorage(f"not enough free disk space {purpose}: under limits.min_free_disk "
                                      f"({self.config.limits.min_free_disk:,} bytes) is left")

    def faces_and_decisions(self, data: bytes, source: Source | None = None) -> list:
        """Return every face of one photo with the active model's Decision (None before any
        model); with a ``source``, each face is kept as a face record."""
        return faces_and_decisions(data, self.active, self.predict_options,
                                   self.config.faces.cnn_fallback_gallery_under, keep=self.keeper(source))

    def enrol_face(self, name: str, filename: str, data: bytes, index: int) -> dict:
        """Enrol face number ``index`` of a photo with several (the index in predict's answer):
        found and encoded as predict finds them, checked by the quality gate."""
        faces = [face for face, _ in self.faces_and_decisions(data)]
        if not 0 <= index < len(faces):
            raise DatasetNotValid(f"the photo has {len(faces)} faces: face={index} is not one of them",
                                  {"faces": len(faces), "face": index})
        face = faces[index]
        refusal = face.quality.refusal(float(self.config.faces.min_enrol_quality)) if face.quality else None
        if refusal:
            raise DatasetNotValid(f"face {index} cannot be enrolled: {refusal}",
                                  {"skipped": [{"file": filename, "face": index, "reason": refusal,
                                                "quality": face.quality.as_dict()}]})
        people = self.people
        result = people.enrol_encodings(name, [face.encoding], [f"{filename} (face {index})"])
        people.on_enrolled(result["name"], [(entry["source"], data, face, entry["id"]) for entry in result["added"]])
        return result

    def recluster(self) -> dict:
        """Start grouping every unknown face of the inbox again, in the background (the job)."""
        return self.inbox_jobs.start("recluster", lambda progress: self.inbox.recluster(progress))

    def video_info(self, path: Path, limits: VideoLimits | None = None) -> VideoInfo:
        """Return a video's header once it is checked (format, video stream, caps; ``limits``:
        lower ones than the service's): bad ones fail here."""
        with opened_video(path, limits or self.video_limits) as (_, _, info):
            return info

    def predict_video(self, path: Path, *, progress=lambda *_: None, save_thumbnails: bool = True,
                      limits: VideoLimits | None = None, budget: float | None = None,
                      source: Source | None = None) -> dict:
        """Return who appears when in the video at ``path`` (see utils.video.video_timeline);
        ``limits``: lower caps than the service's; ``budget``: the decoded seconds an answer
        given at once may take (LongerThanDeclared past them); with a ``source``, each track is
        kept as a face record."""
        model = self.active.current()
        keep = None if source is None else lambda tracks: self.inbox.keep_tracks(tracks, source, model.id)
        result = video_timeline(path, model.classifier, self.video_options, limits or self.video_limits,
                                save_thumbnail=self.saved_thumbnail if save_thumbnails else None, progress=progress,
                                budget=budget, on_tracks=keep)
        return {**result, "model": model.id}

    def saved_thumbnail(self, jpeg: bytes) -> str | None:
        """Keep a video's best-frame thumbnail among the annotated copies, under their retention;
        return its name (served at /uploads/<name>), None when copies are off or the disk refuses."""
        if not self.annotated.enabled:
            return None
        try:
            return self.annotated.save(jpeg)
        except OSError as exc:
            log.warning("video thumbnail not written: %s", exc.strerror or exc)
            return None

    def train(self, source, *, tune: bool = False, progress=lambda *_: None, source_name: str | None = None) -> dict:
        """Train or tune on a zip or folder, save the model and make it active."""
        return train_model(source, self.config, self.store, tune=tune, cache_folder=self.paths.cache,
                           progress=progress, source_name=source_name)

    def import_gallery(self, gallery: ImportedGallery, *, source_name: str, progress=lambda *_: None) -> dict:
        """Make a calibrated, active model of precomputed encodings (utils/importing.py)."""
        return import_gallery(gallery, self.config, self.store, source_name=source_name, progress=progress)


def log_dlib_build() -> None:
    """Say which dlib runs: without BLAS every encoding costs ~5 times more (see README)."""
    import dlib

    if dlib.DLIB_USE_BLAS:
        log.info("dlib %s with BLAS", dlib.__version__)
    else:
        log.warning("dlib %s without BLAS: encodings take ~0.06 s instead of ~0.01 s; "
                    "install libopenblas-dev and run `make dlib-build`", dlib.__version__)


def build_service(config: Config, *, console_log: bool = True) -> Service:
    """Create the data folders, start logging, load dlib's models and the active model."""
    paths = Paths(config.data_dir).create()
    configure_logging(paths.log_file, config.logging.level, console=console_log)
    face_library()  # load dlib's models now, before a server forks its workers
    log_dlib_build()
    configure_pillow(int(config.limits.max_image_pixels))
    store = ModelStore(paths.models, keep=int(config.models.keep), wait=float(config.models.busy_wait))
    for name in store.clean_staging():
        log.warning("removed %s, left by an interrupted training", name)
    jobs = JobRunner(paths.jobs)
    for name in jobs.stale_uploads(paths.incoming):
        log.warning("removed the upload %s, left by an interrupted training or video", name)
    annotated = AnnotatedCopies(paths.annotated, config.annotated.keep, config.annotated.max_age)
    removed = annotated.clean()
    if removed:
        log.info("removed %d annotated copies past their retention (or left by a kill)", removed)
    service = Service(config=config, paths=paths, store=store, active=ActiveModel(store),
                     jobs=jobs, annotated=annotated,
                     predict_options=Options.from_config(config.faces, config.limits, training=False),
                      video_jobs=JobRunner(paths.jobs / "video", busy=VideoInProgress,
                                           busy_text="a long video is already being analysed; wait for it to finish"),
                      video_options=VideoOptions.from_config(config.video, config.faces),
                      video_limits=VideoLimits.from_config(config.limits),
                      cameras=CameraStore(paths, config.cameras),
                      inbox=Inbox(paths.inbox, config.inbox, min_quality=config.faces.min_enrol_quality, store=store,
                                  index_min=config.classifier.index_min, nprobe=config.classifier.nprobe),
                      inbox_jobs=JobRunner(paths.jobs / "inbox", busy=ClusteringInProgress,
                                           busy_text="the inbox's faces are already being grouped again"))
    service.inbox.people = lambda: service.people
    try:
        for action in service.inbox.recover():
            log.warning("undid the model change of the interrupted inbox action %s", action)
    except (PyRecognizerError, OSError, sqlite3.Error) as exc:
        log.error("interrupted inbox actions could not be undone: %s", exc)
    if store.active_id():
        try:
            log.info("serving model %s", service.active.current().id)
        except PyRecognizerError as exc:
            log.error("no model could be loaded: %s", exc.description)
    return service
