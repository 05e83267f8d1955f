"""Where a camera's frames come from: an RTSP(S) stream, an HTTP(S) MJPEG stream, or (for tests
and demos, where ``cameras.allow_files`` is set) a local video file played in a loop.

A camera URL is admin input, and it is also a secret: cameras carry their credentials in it
(``rtsp://user:password@host/...``). ``checked_url`` refuses every scheme but these, and
``redacted`` is the only form of a URL that leaves this module: in answers, logs, states and
error reasons (FFmpeg's own messages name the URL, so reasons are built from error numbers,
never from its text).

Every source is an iterator of PyAV video frames that ends or raises ``CameraError`` with a
reason a person can act on ("connection refused", "wrong credentials (401)", "the stream
stalled: no frame for 5 s"...). Reads never wait longer than ``read_timeout``, so a camera
that stops sending cannot hold its reader for ever; frames over ``limits.max_video_pixels``
are refused before they are decoded when the header says their size, and as they decode.
"""
from __future__ import annotations

import base64
import contextlib
import errno
import http.client
import io
import logging
import re
import socket
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit, urlunsplit

from PIL import Image

log = logging.getLogger(__name__)

NETWORK_SCHEMES = ("rtsp", "rtsps", "http", "https")
MAX_URL = 2048
MAX_PART_BYTES = 20 << 20  # one MJPEG part (a JPEG): larger is not a camera frame
MAX_REDIRECTS = 3
# query parameters some cameras take credentials in (…/video.cgi?user=admin&pwd=…)
SECRET_PARAMETERS = re.compile(r"^(user(name)?|login|pass(word|wd)?|pwd|token|key|api_?key|auth|secret|sig(nature)?)$",
                               re.IGNORECASE)
HIDDEN = "***"


class CameraError(Exception):
    """A camera that cannot be watched now; ``reason`` says why, without the URL's secrets.
    ``refused``: the connection itself was refused or unreachable (worth probing for the
    camera's return), as opposed to an answer the camera gave."""

    def __init__(self, reason: str, *, refused: bool = False):
        super().__init__(reason)
        self.reason = reason
        self.refused = refused


@dataclass(frozen=True)
class SourceOptions:
    """How long to wait for a camera, and the frame size cap."""

    open_timeout: float = 10.0
    read_timeout: float = 5.0
    max_pixels: int = 8_847_360
    allow_files: bool = False


# --- URLs -------------------------------------------------------------------------------------


def url_problems(url, allow_files: bool) -> list[str]:
    """Return why ``url`` cannot be a camera's (empty when it can)."""
    if not isinstance(url, str) or not url.strip():
        return ["the url must be a non-empty text"]
    if len(url) > MAX_URL:
        return [f"the url is longer than {MAX_URL} characters"]
    if any(ord(char) < 0x21 or ord(char) == 0x7f for char in url):
        return ["the url holds spaces or control characters"]
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        return [f"the url cannot be read: {exc}"]
    scheme = parts.scheme.lower()
    if scheme == "file":
        if not allow_files:
            return ["file: URLs are refused (cameras.allow_files is off)"]
        if parts.netloc not in ("", "localhost") or not parts.path.startswith("/"):
            return ["a file: URL names an absolute local path: file:///path/to/video.mp4"]
        path = Path(unquote(parts.path))
        if not path.is_file():
            return ["no such video file"]
        return []
    if scheme not in NETWORK_SCHEMES:
        allowed = ", ".join(f"{name}://" for name in NETWORK_SCHEMES) + (", file://" if allow_files else "")
        return [f"the scheme {scheme + ':' if scheme else '(none)'} is refused: use {allowed}"]
    if not parts.hostname:
        return ["the url names no host"]
    if port == 0:
        return ["port 0 is not a port"]
    return []


def kind_of(url: str) -> str:
    """Return the source kind of a checked URL: "rtsp", "mjpeg" or "file"."""
    scheme = urlsplit(url).scheme.lower()
    return {"rtsp": "rtsp", "rtsps": "rtsp", "http": "mjpeg", "https": "mjpeg"}.get(scheme, "file")


def redacted(url: str) -> str:
    """Return ``url`` with its user name, password and credential-like query values hidden."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return HIDDEN  # unreadable: show nothing of it
    netloc = parts.netloc
    if "@" in netloc:
        netloc = f"{HIDDEN}@{'[' + host + ']' if ':' in host else host}{port}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode([(key, HIDDEN if SECRET_PARAMETERS.match(key) else value) for key, value in pairs], safe="*")
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def secrets_of(url: str) -> list[str]:
    """Return the secret texts of ``url`` (user, password, credential query values), to scrub them
    from any message that might quote the URL."""
    try:
        parts = urlsplit(url)
        found = [parts.username, parts.password, unquote(parts.password or ""), unquote(parts.username or "")]
        found += [value for key, value in parse_qsl(parts.query) if SECRET_PARAMETERS.match(key)]
    except ValueError:
        return [url]
    return [text for text in found if text and len(text) >= 2] + [url]


def scrubbed(text: str, url: str) -> str:
    """Return ``text`` with every secret of ``url`` (and the URL itself) replaced by its redacted form."""
    for secret in sorted(secrets_of(url), key=len, reverse=True):
        text = text.replace(secret, redacted(url) if secret == url else HIDDEN)
    return text


# --- reasons ----------------------------------------------------------------------------------


def reason_of(exc: BaseException, options: SourceOptions) -> CameraError:
    """Return the CameraError of a failure to open or read a stream (from its error number and
    type, never from its text, which may quote the URL)."""
    import av

    if isinstance(exc, CameraError):
        return exc
    number = getattr(exc, "errno", None)
    if isinstance(exc, (av.ExitError, TimeoutError, socket.timeout)) or number in (errno.ETIMEDOUT, errno.EAGAIN):
        return CameraError(f"the stream stalled: no data for {options.read_timeout:g} s")
    if number == errno.ECONNREFUSED or isinstance(exc, ConnectionRefusedError):
        return CameraError("connection refused", refused=True)
    if number in (errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EHOSTDOWN):
        return CameraError("host unreachable", refused=True)
    if number in (errno.EPERM, errno.EACCES) or isinstance(exc, av.HTTPUnauthorizedError):
        return CameraError("wrong credentials (the camera answered 401)")
    if isinstance(exc, av.HTTPForbiddenError):
        return CameraError("access forbidden (the camera answered 403)")
    if number == errno.ENOENT or isinstance(exc, av.HTTPNotFoundError):
        return CameraError("no such stream on the camera (404)")
    if isinstance(exc, socket.gaierror):
        return CameraError("unknown host name", refused=True)
    if isinstance(exc, (av.InvalidDataError, av.EOFError)):
        return CameraError("not a video stream the service can read")
    if isinstance(exc, (ConnectionResetError, BrokenPipeError)) or number in (errno.ECONNRESET, errno.EPIPE):
        return CameraError("the camera closed the connection")
    if isinstance(exc, av.FFmpegError):
        return CameraError(f"the stream cannot be read ({exc.strerror or 'FFmpeg error'})")
    if isinstance(exc, OSError):
        return CameraError(f"the stream cannot be read ({exc.strerror or type(exc).__name__})")
    return CameraError(f"the stream cannot be read ({type(exc).__name__})")


def checked_size(width: int, height: int, options: SourceOptions) -> None:
    """Refuse frames over the pixel cap (``limits.max_video_pixels``)."""
    if width * height > options.max_pixels:
        raise CameraError(f"frames of {width}x{height} are over limits.max_video_pixels ({options.max_pixels:,})")


@contextlib.contextmanager
def camera_errors(options: SourceOptions):
    """Turn any failure of the block into the CameraError saying why (``reason_of``)."""
    try:
        yield
    except CameraError:
        raise
    except Exception as exc:
        raise reason_of(exc, options) from None


def checked_frames(frames, options: SourceOptions) -> Iterator:
    """Yield ``frames``, each held to the pixel cap."""
    for frame in frames:
        checked_size(frame.width, frame.height, options)
        yield frame


# --- sources ----------------------------------------------------------------------------------


def frames_of(url: str, options: SourceOptions) -> Iterator:
    """Return an iterator of the camera's decoded frames (av.VideoFrame); see the module docstring."""
    kind = kind_of(url)
    if kind == "rtsp":
        return rtsp_frames(url, options)
    if kind == "mjpeg":
        return mjpeg_frames(url, options)
    if not options.allow_files:
        raise CameraError("file: URLs are refused (cameras.allow_files is off)")
    return file_frames(Path(unquote(urlsplit(url).path)), options)


def rtsp_frames(url: str, options: SourceOptions) -> Iterator:
    """Frames of an RTSP or RTSPS stream, over TCP (interleaved: no UDP ports to open, no loss)."""
    import av

    from utils.video import _av

    _av()
    # a camera is live: probe for a second at most (FFmpeg's default waits up to 5 s before the first frame)
    ffmpeg_options = {"rtsp_transport": "tcp", "timeout": str(int(options.read_timeout * 1_000_000)),
                      "fflags": "nobuffer", "flags": "low_delay", "max_delay": "500000",
                      "analyzeduration": "1000000", "probesize": "1000000"}
    try:
        container = av.open(url, options=ffmpeg_options, timeout=(options.open_timeout, options.read_timeout))
    except Exception as exc:
        raise reason_of(exc, options) from None
    try:
        if not container.streams.video:
            raise CameraError("the stream has no video")
        stream = container.streams.video[0]
        context = stream.codec_context
        if context.width and context.height:
            checked_size(context.width, context.height, options)
        with camera_errors(options):
            yield from checked_frames(container.decode(stream), options)
        raise CameraError("the stream ended")
    finally:
        container.close()


def file_frames(path: Path, options: SourceOptions) -> Iterator:
    """Frames of a local video file, at its own pace (as a camera sends them), from the start again at its end."""
    from utils.video import VideoLimits, opened_video
    from datastructure.errors import PyRecognizerError

    limits = VideoLimits(max_pixels=options.max_pixels, max_frames=2 ** 62, max_seconds=float("inf"))
    try:
        with opened_video(path, limits) as (container, stream, info):
            origin = time.monotonic()
            offset = 0.0
            while True:
                last = None
                for frame in checked_frames(container.decode(stream), options):
                    stamp = (float(frame.time) if frame.time is not None else 0.0) + offset
                    wait = origin + stamp - time.monotonic()
                    if wait > 0:
                        time.sleep(wait)
                    last = stamp
                    yield frame
                if last is None:
                    raise CameraError("the video file has no frame that decodes")
                offset = last + 1 / max(info.fps, 1)
                container.seek(0)
    except PyRecognizerError as exc:
        raise CameraError(exc.description) from None
    except CameraError:
        raise
    except Exception as exc:
        raise reason_of(exc, options) from None


class SameSchemeRedirects(urllib.request.HTTPRedirectHandler):
    """Follow a few redirects, never to another scheme (an http camera cannot send the reader to file: or https:)."""

    max_redirections = MAX_REDIRECTS

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        if urlsplit(newurl).scheme.lower() != urlsplit(req.full_url).scheme.lower():
            raise CameraError(f"the camera redirected to another scheme ({urlsplit(newurl).scheme or 'none'}:): refused")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def mjpeg_response(url: str, options: SourceOptions):
    """Open an MJPEG URL; return the response and its multipart boundary."""
    parts = urlsplit(url)
    bare = urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], parts.path or "/", parts.query, ""))  # no userinfo
    headers = {"User-Agent": "PyRecognizer", "Accept": "multipart/x-mixed-replace, image/jpeg"}
    handlers: list = [urllib.request.ProxyHandler({}), SameSchemeRedirects()]
    if parts.username is not None:
        passwords = urllib.request.HTTPPasswordMgrWithDefaultRealm()
        passwords.add_password(None, bare, unquote(parts.username), unquote(parts.password or ""))
        handlers.append(urllib.request.HTTPDigestAuthHandler(passwords))
        token = base64.b64encode(f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()).decode()
        headers["Authorization"] = f"Basic {token}"
    opener = urllib.request.build_opener(*handlers)
    try:
        response = opener.open(urllib.request.Request(bare, headers=headers), timeout=options.read_timeout)
    except CameraError:
        raise
    except urllib.error.HTTPError as exc:
        exc.close()
        location = (exc.headers or {}).get("Location") or ""
        if 300 <= exc.code < 400 and urlsplit(location).scheme.lower() not in ("", parts.scheme.lower()):
            # urllib refuses some schemes itself, before SameSchemeRedirects sees them
            raise CameraError(f"the camera redirected to another scheme ({urlsplit(location).scheme}:): refused") from None
        if exc.code == 401:
            raise CameraError("wrong credentials (the camera answered 401)") from None
        raise CameraError(f"the camera answered HTTP {exc.code}") from None
    except urllib.error.URLError as exc:
        raise reason_of(exc.reason if isinstance(exc.reason, BaseException) else OSError(str(exc.reason)),
                        options) from None
    except (OSError, http.client.HTTPException) as exc:
        raise reason_of(exc, options) from None
    content_type = response.headers.get("Content-Type", "")
    match = re.search(r'boundary="?([^";]+)"?', content_type)
    if not content_type.lower().startswith("multipart/x-mixed-replace") or not match:
        response.close()
        shown = content_type.split(";")[0].strip()[:60] or "none"
        raise CameraError(f"not an MJPEG stream (Content-Type {shown})")
    boundary = match.group(1)
    return response, (boundary if boundary.startswith("--") else "--" + boundary).encode("latin-1")


def mjpeg_frames(url: str, options: SourceOptions) -> Iterator:
    """Frames of an HTTP(S) MJPEG stream (multipart/x-mixed-replace), each JPEG decoded by PyAV."""
    import av

    response, boundary = mjpeg_response(url, options)
    decoder = av.CodecContext.create("mjpeg", "r")
    try:
        with camera_errors(options):
            yield from mjpeg_decoded(response, boundary, decoder, options)
    finally:
        response.close()


def mjpeg_decoded(response, boundary: bytes, decoder, options: SourceOptions) -> Iterator:
    """The frames of the parts of an open MJPEG response."""
    import av

    while True:
        data = mjpeg_part(response, boundary)
        if data is None:
            raise CameraError("the stream ended")
        try:
            with Image.open(io.BytesIO(data)) as header:  # the size from the JPEG header, before decoding
                checked_size(*header.size, options)
            frames = decoder.decode(av.Packet(data))
        except CameraError:
            raise
        except Exception:
            raise CameraError("a part of the stream is not a JPEG") from None
        yield from checked_frames(frames, options)


def mjpeg_part(response, boundary: bytes) -> bytes | None:
    """Read the next part of a multipart stream: its body, None at the end."""
    line = response.readline(4096)
    while line and not line.startswith(boundary):  # the preamble, or the blank line after a part
        if len(line) >= 4096:
            raise CameraError("not an MJPEG stream (no part boundary)")
        line = response.readline(4096)
    if not line or line.strip().endswith(b"--") and line.strip() == boundary + b"--":
        return None
    length = None
    for _ in range(64):
        header = response.readline(4096)
        if header in (b"\r\n", b"\n", b""):
            break
        name, _, value = header.decode("latin-1").partition(":")
        if name.strip().lower() == "content-length":
            try:
                length = int(value.strip())
            except ValueError:
                raise CameraError("not an MJPEG stream (a bad Content-Length)") from None
    if length is not None:
        if not 0 < length <= MAX_PART_BYTES:
            raise CameraError(f"a part of {length:,} bytes is not a camera frame")
        data = response.read(length)
        if len(data) < length:
            return None
        return data
    # no length: the part runs to the next boundary
    chunks, size = [], 0
    while True:
        line = response.readline(65536)
        if not line:
            return None
        if line.startswith(boundary):
            # put nothing back: the next call expects a boundary, so hand it a fresh start
            response_pushback(response, line)
            break
        chunks.append(line)
        size += len(line)
        if size > MAX_PART_BYTES:
            raise CameraError("a part larger than 20 MB is not a camera frame")
    return b"".join(chunks).rstrip(b"\r\n")


def response_pushback(response, line: bytes) -> None:
    """Make the next ``readline`` of ``response`` return ``line`` again (a boundary read while
    looking for the end of a part without a length)."""
    original = response.readline

    def readline(size=-1):
        response.readline = original
        return line

    response.readline = readline


def tcp_port_open(url: str, timeout: float = 0.5) -> bool:
    """True when the camera's host accepts a TCP connection on its port (a cheap probe while
    waiting to reconnect: the stream is opened again as soon as its server is back)."""
    try:
        parts = urlsplit(url)
        port = parts.port or {"rtsp": 554, "rtsps": 322, "http": 80, "https": 443}.get(parts.scheme.lower())
        if not parts.hostname or not port:
            return False
        with socket.create_connection((parts.hostname, port), timeout=timeout):
            return True
    except (OSError, ValueError):
        return False


def quoted_path(path: Path) -> str:
    """Return the file: URL of a local video (for tests and demos)."""
    return "file://" + quote(str(Path(path).resolve()))
