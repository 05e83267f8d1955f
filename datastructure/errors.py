"""One small hierarchy of typed errors, each knowing its envelope code and HTTP status.

The service raises them; ``api.errors`` turns every one into the JSON envelope (a page for a
browser) and the CLI prints the same envelope, so no layer invents its own error values.
"""


class PyRecognizerError(Exception):
    """Base class: ``code`` goes into the envelope, ``status`` is the HTTP status."""

    code = "INTERNAL_ERROR"
    status = 500

    def __init__(self, description: str, data=None):
        super().__init__(description)
        self.description = description
        self.data = data


class MissingFile(PyRecognizerError):
    """A request without the file it must upload, or with an empty one."""

    code, status = "MISSING_FILE", 400


class FileNotValid(PyRecognizerError):
    """An upload that is not a usable image (wrong format, truncated, renamed HTML...)."""

    code, status = "FILE_NOT_VALID", 400


class ImageTooLarge(PyRecognizerError):
    """An image whose pixel count is over the configured cap (decompression bomb)."""

    code, status = "IMAGE_TOO_LARGE", 413


class ArchiveNotValid(PyRecognizerError):
    """A zip that is broken, hostile (traversal, nesting, encryption) or not a zip at all."""

    code, status = "ARCHIVE_NOT_VALID", 400


class ArchiveTooLarge(PyRecognizerError):
    """A zip over the size, entry-count or compression-ratio caps (zip bomb)."""

    code, status = "ARCHIVE_TOO_LARGE", 413


class DatasetNotValid(PyRecognizerError):
    """A readable archive whose layout or photos cannot make a model; ``data`` lists why."""

    code, status = "DATASET_NOT_VALID", 422


class GalleryNotValid(PyRecognizerError):
    """An imported gallery of encodings that cannot make a model (shape, NaN, names...);
    ``data["problems"]`` says each reason."""

    code, status = "GALLERY_NOT_VALID", 422


class ClassifierNotLoaded(PyRecognizerError):
    """No model to predict with: none trained yet, or none that loads."""

    code, status = "CLASSIFIER_NOT_LOADED", 503


class TrainingInProgress(PyRecognizerError):
    """A training or tuning is already running: one at a time."""

    code, status = "TRAINING_IN_PROGRESS", 409


class NotFound(PyRecognizerError):
    """No such model, job or file."""

    code, status = "NOT_FOUND", 404


class ModelNotValid(PyRecognizerError):
    """A model folder that is incomplete or fails its checksum manifest."""

    code, status = "MODEL_NOT_VALID", 409


class FaceLibraryMissing(PyRecognizerError):
    """face_recognition or its model weights could not be imported."""

    code, status = "FACE_LIBRARY_MISSING", 500


class ClusterUnavailable(PyRecognizerError):
    """The configured Dask scheduler cannot be reached, has no usable worker, or went away."""

    code, status = "CLUSTER_UNAVAILABLE", 503


class InsufficientStorage(PyRecognizerError):
    """The data folder has less free space than ``limits.min_free_disk``: nothing new is written."""

    code, status = "INSUFFICIENT_STORAGE", 507


class NameNotValid(PyRecognizerError):
    """A person name that is empty, reserved, holds control or bidi characters, is too long,
    or collides with another once normalised (``data`` lists the problems)."""

    code, status = "NAME_NOT_VALID", 422


class ModelsBusy(PyRecognizerError):
    """Another change of the models (a training, an enrolment, an activation...) holds the
    store: the change was not made; retry after ``retry_after`` seconds."""

    code, status = "MODELS_BUSY", 409

    def __init__(self, description: str, data=None, retry_after: int = 2):
        super().__init__(description, data)
        self.retry_after = retry_after


class ModelActive(PyRecognizerError):
    """The active model cannot be deleted: activate another one first."""

    code, status = "MODEL_ACTIVE", 409


class TooManyPhotos(PyRecognizerError):
    """More photos in one enrolment than ``limits.max_enrol_photos``: train from a zip instead."""

    code, status = "TOO_MANY_PHOTOS", 413


class VideoNotValid(PyRecognizerError):
    """An upload that looks like a video container but does not decode (damaged, truncated, garbage)."""

    code, status = "VIDEO_NOT_VALID", 400


class VideoFormatNotSupported(PyRecognizerError):
    """A media file of a kind the service does not take (accepted: mp4, mov, mkv, webm, avi)."""

    code, status = "VIDEO_FORMAT_NOT_SUPPORTED", 415


class NoVideoStream(PyRecognizerError):
    """A container with no picture in it (audio only, subtitles...)."""

    code, status = "NO_VIDEO_STREAM", 422


class VideoTooLarge(PyRecognizerError):
    """A video over the pixel, frame or duration caps (a video bomb), in its header or as it decodes."""

    code, status = "VIDEO_TOO_LARGE", 413


class VideoInProgress(PyRecognizerError):
    """A long video is already being analysed in the background: one at a time."""

    code, status = "VIDEO_IN_PROGRESS", 409


class NotYours(PyRecognizerError):
    """A job someone else started: only its owner or an admin may cancel it."""

    code, status = "FORBIDDEN", 403


class CameraNotValid(PyRecognizerError):
    """A camera definition that cannot be watched: a bad name, a URL of a refused scheme, a
    setting out of range (``data["problems"]`` says each reason)."""

    code, status = "CAMERA_NOT_VALID", 422


class CameraExists(PyRecognizerError):
    """A camera of that name is already defined."""

    code, status = "CAMERA_EXISTS", 409


class CameraInConfig(PyRecognizerError):
    """A camera defined in the configuration file: change it there, not over REST."""

    code, status = "CAMERA_IN_CONFIG", 409


class UndoNotPossible(PyRecognizerError):
    """An inbox action that cannot be undone: already undone, or a later change of the models
    came after it (undo that one first)."""

    code, status = "UNDO_NOT_POSSIBLE", 409


class ClusteringInProgress(PyRecognizerError):
    """The inbox's unknown faces are already being grouped again in the background: one at a time."""

    code, status = "CLUSTERING_IN_PROGRESS", 409
