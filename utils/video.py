"""Video: an uploaded clip -> who appears when, as a timeline per person and per unknown face.

face_recognition's own video examples detect and encode every frame at full resolution. Here
frames are decoded once (PyAV, FFmpeg from its wheel), only a few per second are looked at,
detection runs on a copy of at most ``detect_size`` pixels, and an IoU tracker follows each
face from one sampled frame to the next, so a face is encoded when its track starts and then
only every ``confirm_seconds``, not on every frame. A track's name is the vote of its
encodings: one blurry frame cannot rename a person.

Every upload is hostile until it has decoded: the container is decided by its first bytes and
opened with that one demuxer (FFmpeg's probing would also try playlists and other demuxers that
open further files), and the pixel, frame and duration caps are checked against the header
and again on every decoded frame, since a header can lie. For the same reason an answer given
at once (a video whose header says it is short) has a budget of decoded time and frames: past
it, ``LongerThanDeclared`` tells the caller to make it a job instead.

FFmpeg's error messages name the file they read (the upload's absolute path): refusals give
only their reason.
"""
from __future__ import annotations

import contextlib
import logging
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
from PIL import Image

from datastructure.classifier import UNKNOWN, Decision
from datastructure.errors import NoVideoStream, VideoFormatNotSupported, VideoNotValid, VideoTooLarge
from datastructure.response import envelope
from utils.faces import DLIB_LOCK, face_library, first_pass, mirror_radius, mirrored_where_needed, scaled_box
from utils.images import encode_jpeg
from utils.quality import face_quality

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi")
# MP4 and QuickTime files start with one of these boxes (after its 4-byte size).
MOV_BOXES = (b"ftyp", b"moov", b"mdat", b"free", b"wide", b"skip", b"pnot")
# Other media files, named in the refusal (415) rather than called damaged (400).
OTHER_MEDIA = ((b"FLV", "FLV"), (b"OggS", "Ogg"), (b"\x00\x00\x01\xba", "MPEG program stream"),
               (b"\x00\x00\x01\xb3", "MPEG video"), (b"\x30\x26\xb2\x75", "ASF/WMV"), (b"GIF8", "GIF"),
               (b"\x89PNG", "PNG"), (b"\xff\xd8\xff", "JPEG"), (b"ID3", "MP3"), (b"fLaC", "FLAC"),
               (b"#EXTM3U", "M3U playlist"), (b"ffconcat", "FFmpeg concat list"))
# The frame budget of an answer given at once, per second of its time budget: frames whose
# timestamps lie (all zero, say) still count.
DIRECT_FPS = 60
# The decision of a face while no model exists: nobody is enrolled, every face is a stranger.
NOBODY = Decision(name=UNKNOWN, confidence=0.0, distance=math.inf, candidate=UNKNOWN, runner_up=None,
                  runner_up_distance=None)
SAME_FACE = 0.55  # two unknown tracks closer than this (mean encodings) are one stranger
THUMBNAIL_SIDE = 160


@dataclass(frozen=True)
class VideoLimits:
    """The caps against video bombs (``limits`` section)."""

    max_pixels: int = 8_847_360
    max_frames: int = 216_000
    max_seconds: float = 3600.0

    @classmethod
    def from_config(cls, limits) -> "VideoLimits":
        """Return the caps of the ``limits`` config section."""
        return cls(limits.max_video_pixels, limits.max_video_frames, limits.max_video_seconds)

    def within(self, seconds: float) -> "VideoLimits":
        """Return these caps, lowered to ``seconds`` of video (and DIRECT_FPS frames a second of it)."""
        return VideoLimits(self.max_pixels, min(self.max_frames, int(seconds * DIRECT_FPS)), min(self.max_seconds, seconds))


class LongerThanDeclared(Exception):
    """A video answered at once decodes past its budget: its header said it was shorter."""


@dataclass(frozen=True)
class VideoOptions:
    """How a video is looked at (``video`` section)."""

    sample_fps: float = 4.0
    detect_size: int = 960
    confirm_seconds: float = 1.0
    min_iou: float = 0.3
    gap_seconds: float = 1.0
    always_mirror: bool = False  # faces.always_mirror: mirror every face, settled or not

    @classmethod
    def from_config(cls, video, faces=None) -> "VideoOptions":
        """Return the options of the ``video`` config section (and faces.always_mirror)."""
        return cls(sample_fps=video.sample_fps, detect_size=video.detect_size,
                   confirm_seconds=video.confirm_seconds, min_iou=video.min_iou, gap_seconds=video.gap_seconds,
                   always_mirror=bool(faces.always_mirror) if faces is not None else False)


@dataclass(frozen=True)
class VideoInfo:
    """What the header says about a video."""

    container: str
    codec: str
    width: int
    height: int
    fps: float
    frames: int
    seconds: float
    offset: float = 0.0
    """Seconds from the start of the file (as a player counts, e.g. from the audio) to the first video frame."""

    def as_dict(self) -> dict:
        """Return the header as the answer's ``video`` object."""
        return {"container": self.container, "codec": self.codec, "width": self.width, "height": self.height,
                "fps": round(self.fps, 3), "frames": self.frames, "seconds": round(self.seconds, 3),
                "offset": round(self.offset, 3)}


# --- opening --------------------------------------------------------------------------------


def demuxer_of(head: bytes) -> str | None:
    """Return the FFmpeg demuxer of an accepted container from its first bytes, else None."""
    if head[4:8] in MOV_BOXES:
        return "mov"  # mp4, mov, m4v
    if head[:4] == b"\x1a\x45\xdf\xa3":
        return "matroska"  # mkv, webm
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return "avi"
    return None


def other_media(head: bytes) -> str | None:
    """Return the name of a media format the service does not take, when the bytes show one."""
    if head[:4] == b"RIFF":
        return f"RIFF {head[8:12].decode('latin-1').strip()}"
    if len(head) > 188 and head[0] == 0x47 and head[188] == 0x47:
        return "MPEG transport stream"
    if head[:2] in (b"\xff\xfb", b"\xff\xf3", b"\xff\xf1", b"\xff\xf9"):
        return "MPEG audio or AAC"
    for magic, name in OTHER_MEDIA:
        if head.startswith(magic):
            return name
    return None


def is_video_file(path: Path) -> bool:
    """True when ``path`` looks like a video: by its name, else by its first bytes (the CLI's test)."""
    if Path(path).suffix.lower() in VIDEO_SUFFIXES:
        return True
    try:
        with open(path, "rb") as handle:
            return demuxer_of(handle.read(16)) is not None
    except OSError:
        return False


def _av():
    import av  # FFmpeg: imported when a video comes, not at every start

    av.logging.set_level(av.logging.PANIC)  # its complaints about a damaged file are our 400, not log noise
    return av


@contextlib.contextmanager
def opened_video(path: Path, limits: VideoLimits = VideoLimits()):
    """Open ``path`` as a video and check it; yield (container, stream, VideoInfo).

    VideoFormatNotSupported (415) for other media, VideoNotValid (400) for what does not
    demux, NoVideoStream (422) for audio only, VideoTooLarge (413) past the caps.
    """
    with open(path, "rb") as handle:
        head = handle.read(256)
    demuxer = demuxer_of(head)
    if demuxer is None:
        kind = other_media(head)
        if kind:
            raise VideoFormatNotSupported(f"{kind} files are not taken: send an mp4, mov, mkv, webm or avi video")
        raise VideoNotValid("this file is not a video the service can read (mp4, mov, mkv, webm or avi)")
    av = _av()
    try:
        container = av.open(str(path), format=demuxer)
    except (av.FFmpegError, ValueError, OSError) as exc:
        raise VideoNotValid(f"the video cannot be read: {reason(exc)}") from None
    try:
        streams = container.streams.video
        if not streams:
            raise NoVideoStream("this file has no video stream (audio only?)")
        stream = streams[0]
        info = video_info(container, stream, demuxer)
        checked_header(info, limits)
        yield container, stream, info
    finally:
        container.close()


def reason(exc: Exception) -> str:
    """FFmpeg's reason for an error, without the file name its message carries."""
    return getattr(exc, "strerror", None) or type(exc).__name__


def video_info(container, stream, demuxer: str) -> VideoInfo:
    """Return what the header says: size, frame rate, frame count and duration (0 when unsaid)."""
    context = stream.codec_context
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    fps = float(rate) if rate else 0.0
    if not fps or not math.isfinite(fps) or fps > 1000:
        fps = 25.0  # a nonsense rate: a plausible one for timing; the caps check real frames
    seconds = 0.0
    if stream.duration and stream.time_base:
        seconds = float(stream.duration * stream.time_base)
    elif container.duration:
        seconds = container.duration / 1_000_000  # AV_TIME_BASE
    frames = int(stream.frames or 0) or int(round(seconds * fps))
    offset = 0.0
    if stream.start_time is not None and stream.time_base and container.start_time is not None:
        offset = max(0.0, float(stream.start_time * stream.time_base) - container.start_time / 1_000_000)
    return VideoInfo(container=demuxer, codec=context.name if context.codec else "unknown",
                     width=int(context.width or 0), height=int(context.height or 0), fps=fps,
                     frames=frames, seconds=max(seconds, 0.0), offset=offset if offset < 3600 else 0.0)


def checked_header(info: VideoInfo, limits: VideoLimits) -> None:
    """Refuse a header that announces a bomb, or no picture at all."""
    if info.width <= 0 or info.height <= 0:
        raise VideoNotValid("the video stream has no picture size")
    if info.width * info.height > limits.max_pixels:
        raise VideoTooLarge(f"{info.width}x{info.height} is over the {limits.max_pixels:,}-pixel cap per frame",
                            {"width": info.width, "height": info.height})
    if info.frames > limits.max_frames:
        raise VideoTooLarge(f"{info.frames:,} frames is over the {limits.max_frames:,}-frame cap")
    if info.seconds > limits.max_seconds:
        raise VideoTooLarge(f"{info.seconds:,.0f} s is over the {limits.max_seconds:,.0f}-second cap")


@dataclass
class Sample:
    """One sampled frame: its index in the video, its time, and its pixels converted on demand,
    turned upright (phones record sideways and say so in the display matrix)."""

    index: int
    time: float
    frame: object  # av.VideoFrame
    _rgb: np.ndarray | None = None

    @property
    def quarter_turns(self) -> int:
        """Counter-clockwise quarter turns a player applies to show the frame upright."""
        return round((getattr(self.frame, "rotation", 0) or 0) / 90) % 4

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) upright."""
        width, height = self.frame.width, self.frame.height
        return (height, width) if self.quarter_turns % 2 else (width, height)

    def upright(self, array: np.ndarray) -> np.ndarray:
        """Return ``array`` (pixels of this frame) turned upright."""
        return np.ascontiguousarray(np.rot90(array, self.quarter_turns)) if self.quarter_turns else array

    def rgb(self) -> np.ndarray:
        """The frame as HxWx3 RGB, upright, at its own size (what encodings and thumbnails need)."""
        if self._rgb is None:
            self._rgb = self.upright(self.frame.to_ndarray(format="rgb24"))
        return self._rgb

    def gray(self, longest: int) -> tuple[np.ndarray, float]:
        """The frame in grey, upright, scaled by FFmpeg so its longest side is ``longest``, and the
        factor to map its pixels back (HOG on grey costs ~4/5 of RGB and finds the same faces here)."""
        width, height = self.frame.width, self.frame.height
        factor = max(width, height) / longest
        size = max(1, round(width / factor)), max(1, round(height / factor))
        return self.upright(self.frame.reformat(width=size[0], height=size[1], format="gray").to_ndarray()), factor


def sampled_frames(container, stream, info: VideoInfo, limits: VideoLimits, every: float,
                   on_frame: Callable[[int], None] = lambda _: None,
                   budget: float | None = None) -> Iterator[Sample]:
    """Decode every frame (inter frames need their predecessors) and yield one each ``every`` seconds.

    Only the sampled frames are converted to RGB. Each decoded frame is held to the caps, so a
    header announcing 10 frames of 64x64 cannot deliver a million frames of 8K; with a
    ``budget`` (seconds), LongerThanDeclared past that much decoded time or DIRECT_FPS frames
    a second of it.
    """
    av = _av()
    stream.thread_type = "AUTO"  # FFmpeg's frame threads: decoding overlaps the detection
    next_time = 0.0
    index = -1
    origin = None
    try:
        for frame in container.decode(stream):
            index += 1
            # times from the first frame, as a player counts them (MP4s often start at 0.8 s or so)
            stamp = float(frame.time) if frame.time is not None else index / info.fps
            origin = stamp if origin is None else origin
            seconds = stamp - origin
            if index >= limits.max_frames:
                raise VideoTooLarge(f"more than {limits.max_frames:,} frames (the cap)")
            if seconds > limits.max_seconds:
                raise VideoTooLarge(f"longer than the {limits.max_seconds:,.0f}-second cap")
            if frame.width * frame.height > limits.max_pixels:
                raise VideoTooLarge(f"a {frame.width}x{frame.height} frame is over the pixel cap")
            if budget is not None and (seconds > budget or index >= budget * DIRECT_FPS):
                raise LongerThanDeclared(f"frame {index + 1} at {seconds:.1f} s, past {budget:g} s")
            on_frame(index + 1)
            if seconds + 1e-6 >= next_time:
                next_time = max(next_time + every, seconds + every / 2)
                yield Sample(index, max(seconds, 0.0), frame)
    except av.FFmpegError as exc:
        raise VideoNotValid(f"the video stops decoding at frame {index + 1}: {reason(exc)}") from None
    if index < 0:
        raise VideoNotValid("the video has no frame that decodes")


def frame_boxes(sample: Sample, detect_size: int) -> list[tuple[int, int, int, int]]:
    """Return HOG's face boxes in a frame scaled so its longest side is ``detect_size``, in the frame's pixels.

    Unlike a photo's copy (utils.faces), a frame is also scaled up: video faces are small, and
    HOG's window is 80 px. Scaling a 640-px frame to 960 finds faces down to ~55 px at 2.3 times
    the cost, where HOG's own upsampling (twice the size) costs 4 times.
    """
    gray, factor = sample.gray(detect_size)
    with DLIB_LOCK:
        boxes = face_library().face_locations(gray, number_of_times_to_upsample=0, model="hog")
    width, height = sample.size
    return [scaled_box(box, factor, (height, width)) for box in boxes]


# --- tracking -------------------------------------------------------------------------------


def iou(a, b) -> float:
    """Return the intersection over union of two boxes (top, right, bottom, left)."""
    top, right, bottom, left = max(a[0], b[0]), min(a[1], b[1]), min(a[2], b[2]), max(a[3], b[3])
    inter = max(0, right - left) * max(0, bottom - top)
    union = (a[1] - a[3]) * (a[2] - a[0]) + (b[1] - b[3]) * (b[2] - b[0]) - inter
    return inter / union if union > 0 else 0.0


@dataclass
class Track:
    """One face followed across sampled frames."""

    id: int
    box: tuple
    times: list = field(default_factory=list)  # the sample times it was seen at
    last_encoded: float = -math.inf
    encodings: list = field(default_factory=list)
    decisions: list = field(default_factory=list)
    best: tuple = (-1.0, 0.0, None, None)  # (score, time, thumbnail pixels, the face's Quality there)

    @property
    def last_seen(self) -> float:
        """Return the time of the track's last box."""
        return self.times[-1]

    def name(self) -> str:
        """The vote of its encodings; a tie goes to the name given with the higher confidence."""
        votes = Counter(decision.name for decision in self.decisions)
        best = {name: max(d.confidence for d in self.decisions if d.name == name) for name in votes}
        return max(votes, key=lambda name: (votes[name], best[name], name != UNKNOWN))

    def confidence(self) -> float:
        """Return the best confidence given with the track's voted name."""
        name = self.name()
        return max((d.confidence for d in self.decisions if d.name == name), default=0.0)

    def consider(self, sample: "Sample", box, decision) -> None:
        """Keep this frame as the track's best when it is: the most confident for a name, the
        largest face for a stranger (its thumbnail and face record come from there)."""
        top, right, bottom, left = box
        score = decision.confidence if decision.name != UNKNOWN else (right - left) * (bottom - top) / 1e9
        if score > self.best[0]:
            self.best = (score, sample.time, thumbnail(sample.rgb(), box), face_quality(sample.rgb(), box, None, "hog"))


class IouTracker:
    """Follows faces between sampled frames by box overlap (sklearn style: state in ``tracks_``)."""

    def __init__(self, min_iou: float = 0.3, max_gap: float = 1.0):
        self.min_iou = min_iou
        self.max_gap = max_gap
        self.tracks_: list[Track] = []
        self.started_ = 0  # tracks ever started: the next one's id (``ended`` removes tracks)

    def update(self, time: float, boxes: list) -> list[Track]:
        """Return the track of each box at ``time``: the best-overlapping live track, or a new one."""
        live = [track for track in self.tracks_ if time - track.last_seen <= self.max_gap]
        pairs = sorted(((iou(box, track.box), i, j) for i, box in enumerate(boxes) for j, track in enumerate(live)),
                       reverse=True)
        found: dict[int, Track] = {}
        taken: set[int] = set()
        for overlap, i, j in pairs:
            if overlap < self.min_iou:
                break
            if i not in found and j not in taken:
                found[i] = live[j]
                taken.add(j)
        result = []
        for i, box in enumerate(boxes):
            track = found.get(i)
            if track is None:
                track = Track(id=self.started_, box=box)
                self.started_ += 1
                self.tracks_.append(track)
            track.box = box
            track.times.append(time)
            result.append(track)
        return result

    def ended(self, time: float) -> list[Track]:
        """Remove and return the tracks unseen for longer than ``max_gap`` at ``time`` (a live
        stream's tracker would otherwise grow for ever)."""
        gone = [track for track in self.tracks_ if time - track.last_seen > self.max_gap]
        self.tracks_ = [track for track in self.tracks_ if time - track.last_seen <= self.max_gap]
        return gone


def tracked_faces(sample: Sample, tracker: IouTracker, classifier, options: VideoOptions,
                  min_face_px: int = 0) -> list[tuple[Track, tuple, object]]:
    """Detect the faces of one sampled frame, follow them with ``tracker`` and, for each track
    due (new, or ``confirm_seconds`` since its last encoding), encode the face and add the
    classifier's decision to the track's vote. Return (track, box, decision or None) per face.

    ``classifier`` None (no model yet): every decided face is unknown. Faces shorter than
    ``min_face_px`` are ignored (a camera's setting).
    """
    boxes = [box for box in frame_boxes(sample, options.detect_size) if box[2] - box[0] >= min_face_px]
    tracks = tracker.update(sample.time, boxes)
    due = [i for i, track in enumerate(tracks) if sample.time - track.last_encoded >= options.confirm_seconds - 1e-6]
    decided: dict[int, object] = {}
    if due:
        # the mirror pass only for faces whose name it could change (utils/faces.py); an unknown
        # track's encodings may then be first passes, within the radius of the means
        first, chips = first_pass(sample.rgb(), [boxes[i] for i in due])
        settled = classifier.decision_is_certain if classifier is not None else None
        encodings, _ = mirrored_where_needed(first, chips, settled,
                                             mirror_radius(options.always_mirror) if settled else None)
        decisions = classifier.decisions(encodings) if classifier is not None else [NOBODY] * len(due)
        for i, encoding, decision in zip(due, encodings, decisions):
            track = tracks[i]
            track.last_encoded = sample.time
            track.encodings.append(encoding)
            track.decisions.append(decision)
            decided[i] = decision
    return [(track, boxes[i], decided.get(i)) for i, track in enumerate(tracks)]


# --- the timeline ---------------------------------------------------------------------------


def thumbnail(array: np.ndarray, box) -> np.ndarray:
    """Return the face of ``box`` with a margin around it, at most THUMBNAIL_SIDE px."""
    top, right, bottom, left = box
    margin = round(0.35 * max(bottom - top, right - left))
    height, width = array.shape[:2]
    crop = array[max(0, top - margin):min(height, bottom + margin), max(0, left - margin):min(width, right + margin)]
    picture = Image.fromarray(np.ascontiguousarray(crop))
    picture.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE))
    return np.asarray(picture)


def time_ranges(times: list[float], gap: float, step: float, duration: float) -> list[dict]:
    """Return the time ranges covering sorted sample ``times``: samples further apart than ``gap``
    start a new range; each range reaches half a sample step beyond its first and last sample."""
    ranges: list[list[float]] = []
    for time in sorted(times):
        if ranges and time - ranges[-1][1] <= gap:
            ranges[-1][1] = time
        else:
            ranges.append([time, time])
    end_cap = duration if duration > 0 else math.inf
    return [{"start": round(max(0.0, start - step / 2), 2), "end": round(min(end_cap, end + step / 2), 2)}
            for start, end in ranges]


def grouped(tracks: list[Track]) -> list[tuple[str, bool, list[Track]]]:
    """Return (name, known, tracks) per person, and per distinct unknown face: unknown tracks whose
    mean encodings are within SAME_FACE are one stranger, named "unknown 1", "unknown 2"..."""
    people: dict[str, list[Track]] = {}
    strangers: list[tuple[np.ndarray, list[Track]]] = []
    for track in sorted(tracks, key=lambda track: track.times[0]):
        if not track.encodings:
            continue
        name = track.name()
        if name != UNKNOWN:
            people.setdefault(name, []).append(track)
            continue
        mean = np.mean(track.encodings, axis=0)
        for centre, members in strangers:
            if np.linalg.norm(centre - mean) <= SAME_FACE:
                members.append(track)
                break
        else:
            strangers.append((mean, [track]))
    groups = [(name, True, members) for name, members in people.items()]
    groups += [(f"{UNKNOWN} {number}", False, members) for number, (_, members) in enumerate(strangers, 1)]
    return groups


def timeline_entry(name: str, known: bool, tracks: list[Track], options: VideoOptions, info: VideoInfo,
                   save_thumbnail: Callable[[bytes], str] | None) -> dict:
    """Return one row of the timeline: ranges, frames, best confidence, the best frame's thumbnail."""
    step = 1 / options.sample_fps
    times = sorted({time for track in tracks for time in track.times})
    ranges = time_ranges(times, max(options.gap_seconds, 1.5 * step), step, info.seconds)
    best = max(tracks, key=lambda track: track.best[0]).best
    picture = save_thumbnail(encode_jpeg(best[2])) if save_thumbnail and best[2] is not None else None
    return {"name": name, "known": known, "ranges": ranges,
            "frames": int(round(sum(r["end"] - r["start"] for r in ranges) * info.fps)),
            "samples": len(times), "confidence": round(max(track.confidence() for track in tracks), 4) if known else 0.0,
            "best_time": round(best[1], 2), "thumbnail": picture, "tracks": len(tracks)}


def video_timeline(path: Path, classifier, options: VideoOptions = VideoOptions(),
                   limits: VideoLimits = VideoLimits(), *, save_thumbnail: Callable[[bytes], str] | None = None,
                   progress: Callable[[int, int, str], None] = lambda *_: None, budget: float | None = None,
                   on_tracks: Callable[[list[Track]], None] | None = None) -> dict:
    """Return who appears when in the video at ``path``, named by ``classifier``.

    ``save_thumbnail(jpeg) -> name`` stores each row's best-frame thumbnail (None: no thumbnails);
    ``progress(done, total, step)`` follows the frames decoded; ``budget``: see sampled_frames;
    ``on_tracks(tracks)`` gets every track at the end (the inbox keeps one face record per track).
    """
    step = 1 / options.sample_fps
    tracker = IouTracker(options.min_iou, max_gap=max(options.gap_seconds, 1.5 * step))
    with opened_video(path, limits) as (container, stream, info):
        total = info.frames
        progress(0, total, "analysing")
        decoded_frames = 0

        def on_frame(count: int) -> None:
            nonlocal decoded_frames
            decoded_frames = count
            progress(count, max(total, count), "analysing")

        samples = 0
        for sample in sampled_frames(container, stream, info, limits, step, on_frame, budget):
            samples += 1
            for track, box, decision in tracked_faces(sample, tracker, classifier, options):
                if decision is not None:
                    track.consider(sample, box, decision)
    progress(decoded_frames, decoded_frames, "done")
    if on_tracks is not None:
        on_tracks(tracker.tracks_)
    seconds = max(info.seconds, decoded_frames / info.fps)  # a header may say less (or nothing)
    info = VideoInfo(info.container, info.codec, info.width, info.height, info.fps, decoded_frames, seconds, info.offset)
    timeline = [timeline_entry(name, known, members, options, info, save_thumbnail)
                for name, known, members in grouped(tracker.tracks_)]
    timeline.sort(key=lambda entry: (not entry["known"], entry["ranges"][0]["start"]))
    return {"people": {entry["name"]: entry["confidence"] for entry in timeline if entry["known"]},
            "timeline": timeline, "video": info.as_dict(), "samples": samples,
            "encodings": sum(len(track.encodings) for track in tracker.tracks_)}


def summary(result: dict) -> str:
    """Return a result in one sentence: who, and how much video."""
    known = [entry["name"] for entry in result["timeline"] if entry["known"]]
    strangers = len(result["timeline"]) - len(known)
    parts = known + ([f"{strangers} unknown face{'s' if strangers != 1 else ''}"] if strangers else [])
    return f"{', '.join(parts) if parts else 'nobody'} in {result['video']['seconds']:.1f} s of video"


def timeline_envelope(result: dict) -> dict:
    """Return the envelope of a finished analysis (REST and CLI): ``data`` is the result."""
    return envelope(result, description=summary(result), error=None if result["timeline"] else "NO_FACE_FOUND")
