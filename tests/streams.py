"""Camera streams for the tests and the bench, all on loopback:

- ``RtspCamera``: GStreamer's RTSP server (tests/rtsp_server.py, run by the system Python) fed
  by a producer process (``python -m tests.streams``, in the venv) that encodes frames with
  PyAV's libx264 and sends them as RTP over UDP. The producer either plays a video in a loop
  (``loop``) or alternates a grey picture and a face photo (``stamped``) and prints, for each
  appearance of the face, the wall-clock time its first frame was sent: the bench's latency
  starts there.
- ``EventStream``: a script's client of /events (server-sent events), in a thread.
- ``MjpegServer``: an HTTP server of this process serving MJPEG (multipart/x-mixed-replace)
  streams of a video's frames, and the bad cases: frames over a pixel cap, a stream that
  stalls, a page that is not a stream, redirects to other schemes.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from fractions import Fraction
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import requests
from PIL import Image

from tests.support import ROOT, free_port

SYSTEM_PYTHON = os.environ.get("PYRECOGNIZER_GI_PYTHON", "/usr/bin/python3")
BOUNDARY = "pyrecognizerframe"


# --- the producer (a process of its own) --------------------------------------------------------


def encoder_output(port: int, fps: int, width: int, height: int):
    """Return (container, stream): libx264 frames as RTP to 127.0.0.1:``port``, a key frame with
    SPS/PPS every second (late joiners start there), one slice per frame (x264's zerolatency
    cuts frames into slices, which the relay's depayloader and payloader mangle: half-grey frames)."""
    import av

    output = av.open(f"rtp://127.0.0.1:{port}?pkt_size=1200", "w", format="rtp")
    stream = output.add_stream("libx264", rate=fps)
    stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
    stream.time_base = Fraction(1, fps)
    stream.options = {"preset": "ultrafast", "tune": "zerolatency",
                      "x264-params": f"repeat-headers=1:keyint={fps}:min-keyint={fps}:scenecut=0:sliced-threads=0:threads=1"}
    return output, stream


def send(output, stream, array: np.ndarray, index: int, key: bool = False) -> None:
    """Encode and send one frame; ``key``: as a key frame (a camera's encoder starts a new scene
    with one; x264's ultrafast preset does not detect scene cuts)."""
    import av

    frame = av.VideoFrame.from_ndarray(array, format="rgb24")
    frame.pts = index
    if key:
        frame.pict_type = av.video.frame.PictureType.I
    for packet in stream.encode(frame):
        output.mux(packet)


def video_frames(path: Path, fps: int, width: int, height: int):
    """The frames of a video at ``fps`` (decoded again from the start at its end), as RGB arrays."""
    import av

    while True:
        with av.open(str(path)) as container:
            next_time = 0.0
            for frame in container.decode(video=0):
                if frame.time is None or frame.time + 1e-6 >= next_time:
                    next_time += 1 / fps
                    yield frame.reformat(width=width, height=height, format="rgb24").to_ndarray()


def stamped_frames(face: Path, fps: int, width: int, height: int, on: float, off: float):
    """A grey picture for ``off`` seconds, then the face photo for ``on`` seconds, again and
    again; yields (array, True at the first frame of each appearance)."""
    grey = np.full((height, width, 3), 96, np.uint8)
    picture = Image.open(face).convert("RGB")
    picture.thumbnail((width, height))
    shown = grey.copy()
    top, left = (height - picture.height) // 2, (width - picture.width) // 2
    shown[top:top + picture.height, left:left + picture.width] = np.asarray(picture)
    while True:
        for _ in range(round(off * fps)):
            yield grey, False
        for index in range(round(on * fps)):
            yield shown, index == 0


def produce(args) -> None:
    """Send frames in real time until killed; print ``{"appear": wall time}`` lines (stamped)."""
    width, height = args.size
    output, stream = encoder_output(args.udp_port, args.fps, width, height)
    if args.mode == "loop":
        frames = ((array, False) for array in video_frames(Path(args.video), args.fps, width, height))
    else:
        frames = stamped_frames(Path(args.face), args.fps, width, height, args.on, args.off)
    start = time.monotonic()
    parent = os.getppid()
    for index, (array, appears) in enumerate(frames):
        if index % 16 == 0 and os.getppid() != parent:
            return  # the test or bench that started it is gone (killed): stop sending
        wait = start + index / args.fps - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        elif wait < -1:  # fell behind (a busy machine): carry on from now rather than burst
            start = time.monotonic() - index / args.fps
        if appears:
            print(json.dumps({"appear": time.time(), "index": index}), flush=True)
        send(output, stream, array, index, key=appears)


def producer_main(argv=None) -> None:
    parser = argparse.ArgumentParser(description="send H.264 RTP frames to a local RTSP relay")
    parser.add_argument("mode", choices=("loop", "stamped"))
    parser.add_argument("--udp-port", type=int, required=True)
    parser.add_argument("--fps", type=int, default=15)
    parser.add_argument("--size", type=lambda text: tuple(int(part) for part in text.split("x")), default=(640, 360))
    parser.add_argument("--video")
    parser.add_argument("--face")
    parser.add_argument("--on", type=float, default=2.0)
    parser.add_argument("--off", type=float, default=3.0)
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    produce(args)


# --- the RTSP camera the tests drive --------------------------------------------------------------


class RtspCamera:
    """GStreamer's RTSP server on a free port, fed by a producer: ``url``; with ``auth`` a
    second server asks for credentials (``auth_url(user, password)``, the right ones are
    ``user``/``password``). ``stop_server``/``start_server`` kill and restart the open server
    only (on the same port); the producers keep sending."""

    def __init__(self, log_dir: Path, *, mode: str = "loop", video: Path | None = None, face: Path | None = None,
                 fps: int = 15, size: str = "640x360", on: float = 2.0, off: float = 3.0, auth: bool = False):
        self.log_dir = Path(log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.port, self.udp_port = free_port(), free_port()
        self.url = f"rtsp://127.0.0.1:{self.port}/live"
        self.auth = auth
        self.auth_port, self.auth_udp_port = free_port(), free_port()
        self.user, self.password = "camera", "right-password"
        self.producer_args = [mode, "--fps", str(fps), "--size", size, "--on", str(on), "--off", str(off)]
        self.producer_args += ["--video", str(video)] if video else []
        self.producer_args += ["--face", str(face)] if face else []
        self.server = self.auth_server = None
        self.producers: list[subprocess.Popen] = []

    def auth_url(self, user: str, password: str) -> str:
        return f"rtsp://{user}:{password}@127.0.0.1:{self.auth_port}/live"

    def start(self) -> "RtspCamera":
        for port in (self.udp_port, self.auth_udp_port) if self.auth else (self.udp_port,):
            self.producers.append(subprocess.Popen(
                [sys.executable, "-m", "tests.streams", *self.producer_args, "--udp-port", str(port)], cwd=ROOT,
                stdout=subprocess.PIPE if port == self.udp_port else subprocess.DEVNULL,
                stderr=open(self.log_dir / "producer.log", "ab"), text=True))
        self.start_server()
        if self.auth:
            self.auth_server = self.rtsp_server(self.auth_port, self.auth_udp_port,
                                                ["--user", self.user, "--password", self.password])
        return self

    def rtsp_server(self, port: int, udp_port: int, extra: list[str] = ()) -> subprocess.Popen:
        server = subprocess.Popen(
            [SYSTEM_PYTHON, str(ROOT / "tests" / "rtsp_server.py"), "--port", str(port), "--udp-port", str(udp_port),
             *extra], stdout=subprocess.PIPE, stderr=open(self.log_dir / "rtsp-server.log", "ab"), text=True)
        line = server.stdout.readline()  # printed once it listens
        if not line.startswith("rtsp://"):
            raise RuntimeError(f"the RTSP server did not start: {(self.log_dir / 'rtsp-server.log').read_text()[-2000:]}")
        return server

    def start_server(self) -> None:
        self.server = self.rtsp_server(self.port, self.udp_port)

    def stop_server(self, sig: int = signal.SIGKILL) -> None:
        if self.server and self.server.poll() is None:
            self.server.send_signal(sig)
            self.server.wait(10)

    def appearances(self):
        """Yield the wall-clock times the stamped producer showed the face (blocks for the next)."""
        for line in self.producers[0].stdout:
            yield json.loads(line)["appear"]

    def stop(self) -> None:
        self.stop_server(signal.SIGTERM)
        for process in [self.auth_server, *self.producers]:
            if process is not None and process.poll() is None:
                process.terminate()
                try:
                    process.wait(10)
                except subprocess.TimeoutExpired:
                    process.kill()


class EventStream:
    """A script's /events client in a thread (``server``: tests.support.Server): every event in
    order, and the wall-clock time each arrived; reconnects after each stream's end with
    Last-Event-ID, as EventSource does."""

    def __init__(self, server):
        self.server, self.events, self.arrivals, self.last_id = server, [], [], None
        self.streams = 0
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        while not self.stopping.is_set():
            headers = {"Last-Event-ID": self.last_id} if self.last_id else {}
            try:
                with self.server.get("/events", headers=headers, stream=True, timeout=30) as answer:
                    if answer.status_code != 200:
                        time.sleep(1)
                        continue
                    self.streams += 1
                    event_id, data = None, None
                    for line in answer.iter_lines(decode_unicode=True):
                        if line.startswith("id: "):
                            event_id = line[4:]
                        elif line.startswith("data: "):
                            data = line[6:]
                        elif line == "":  # an id without data moves the resume point too (as in EventSource)
                            if data is not None:
                                self.arrivals.append(time.time())
                                self.events.append(json.loads(data))
                            self.last_id = event_id or self.last_id
                            data = None
            except requests.RequestException:
                time.sleep(0.5)

    def wait_for(self, test, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for event in list(self.events):
                if test(event):
                    return event
            time.sleep(0.2)
        raise AssertionError(f"no such event in {timeout} s; got {self.events[-10:]}")


# --- MJPEG over HTTP, served by this process ------------------------------------------------------


def jpeg(array: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(array).save(out, "JPEG", quality=85)
    return out.getvalue()


class MjpegServer:
    """MJPEG streams on a free port: ``/clip.mjpg`` (a video's frames, in a loop, at ``fps``),
    ``/big.mjpg`` (frames of 1000x800), ``/stall.mjpg`` (one frame, then nothing), ``/page``
    (HTML, not a stream), ``/to-file`` and ``/to-rtsp`` (redirects to other schemes)."""

    def __init__(self, video: Path, fps: int = 8, seconds: float = 9.0):
        frames = video_frames(Path(video), fps, 640, 360)
        self.frames = [jpeg(next(frames)) for _ in range(int(seconds * fps))]
        self.big = jpeg(np.full((800, 1000, 3), 128, np.uint8))
        self.fps = fps
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                if self.path == "/page":
                    body = b"<!doctype html><title>not a camera</title>"
                    self.send_response(200)
                    self.send_header("Content-Type", "text/html")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                elif self.path in ("/to-file", "/to-rtsp"):
                    self.send_response(302)
                    self.send_header("Location", "file:///etc/passwd" if self.path == "/to-file" else "rtsp://127.0.0.1:1/x")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                elif self.path in ("/clip.mjpg", "/big.mjpg", "/stall.mjpg"):
                    self.send_response(200)
                    self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY}")
                    self.end_headers()
                    try:
                        server.stream(self.path, self.wfile)
                    except (BrokenPipeError, ConnectionResetError):
                        pass
                else:
                    self.send_error(404)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.httpd.daemon_threads = True
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def stream(self, path: str, out) -> None:
        index = 0
        while not self.stopping.is_set():
            data = self.big if path == "/big.mjpg" else self.frames[index % len(self.frames)]
            out.write(f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(data)}\r\n\r\n".encode())
            out.write(data + b"\r\n")
            out.flush()
            index += 1
            if path == "/stall.mjpg":
                self.stopping.wait(3600)  # the camera hangs: the connection stays open, nothing comes
            self.stopping.wait(1 / self.fps)

    def start(self) -> "MjpegServer":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        self.httpd.shutdown()
        self.httpd.server_close()


if __name__ == "__main__":
    producer_main()
