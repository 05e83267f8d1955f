"""Video: seconds of video analysed per wall-clock second on ../shared/video's clip, ours against
face_recognition's own frame-by-frame loop, with the people each side finds.

* plain: examples/facerec_from_video_file.py's loop: every frame, at full resolution,
  ``face_locations`` (HOG, upsampled once) then ``face_encodings`` and ``compare_faces``
  (tolerance 0.5) against the two reference photos' encodings. Frames come from PyAV (the
  example reads them with OpenCV); decoding is timed on both sides. It runs in this process, on
  our dlib build: the ratio is what the video pipeline saves, not what the OpenBLAS build saves.
* ours: ``Service.predict_video`` on the clip, thumbnails included: sampling, detection at the
  detection size, the IoU tracker, encodings only when a track starts or is confirmed.

Start-up (loading dlib's models, enrolling the two people) is outside both timings.

    python -m bench.video            this section alone (~1 min on 2 idle cores)
    python -m bench --only video
"""
from __future__ import annotations

import os
import statistics
import sys
import time
import zipfile
from pathlib import Path

from bench import ROOT, Row, at_least, engine_config, timed

CLIP = "short_hamilton_clip.mp4"
PEOPLE = {"Lin-Manuel Miranda": "lin-manuel-miranda.png", "Alex Lacamoire": "alex-lacamoire.png"}
TOLERANCE = 0.5  # the example's compare_faces tolerance


def video_folder() -> Path:
    folder = Path(os.environ.get("PYRECOGNIZER_VIDEO") or ROOT.parent / "shared" / "video")
    if not (folder / CLIP).is_file():
        raise SystemExit(f"{folder / CLIP} is missing: ../shared/video or PYRECOGNIZER_VIDEO")
    return folder


def plain_loop(clip: Path, known: dict) -> dict:
    """face_recognition's frame-by-frame example: return the names it gave and its frame counts."""
    import av

    from bench.plain import fr

    names, encodings = list(known), list(known.values())
    found: dict[str, int] = {}
    frames = 0
    with av.open(str(clip)) as container:
        for frame in container.decode(video=0):
            frames += 1
            rgb = frame.to_ndarray(format="rgb24")
            boxes = fr().face_locations(rgb)
            for encoding in fr().face_encodings(rgb, boxes):
                matches = fr().compare_faces(encodings, encoding, tolerance=TOLERANCE)
                name = names[matches.index(True)] if True in matches else "unknown"
                found[name] = found.get(name, 0) + 1
    return {"frames": frames, "faces": found}


def enrolled(workdir: Path, folder: Path):
    """Return a service that learned the two people from their reference photos (start-up, untimed)."""
    from utils.service import build_service

    archive = workdir / "people.zip"
    with zipfile.ZipFile(archive, "w") as handle:
        for name, photo in PEOPLE.items():
            handle.write(folder / photo, f"{name}/{photo}")
    service = build_service(engine_config(workdir / "data"), console_log=False)
    service.train(archive)
    return service


def video_section(workdir: Path, rounds: int = 3, say=print) -> tuple[list[Row], dict]:
    from bench.plain import fr

    workdir.mkdir(parents=True, exist_ok=True)
    folder = video_folder()
    clip = folder / CLIP
    service = enrolled(workdir, folder)
    known = {name: fr().face_encodings(fr().load_image_file(folder / photo))[0] for name, photo in PEOPLE.items()}

    ours = []
    for round_ in range(rounds):
        result, wall, cpu = timed(service.predict_video)(clip)
        ours.append((wall, cpu))
        say(f"video: ours round {round_ + 1}: {wall:.2f} s wall, {cpu:.2f} s CPU")
    say("video: plain frame-by-frame loop (every frame, full resolution; ~30-60 s)")
    plain, plain_wall, plain_cpu = timed(plain_loop)(clip, known)
    seconds = result["video"]["seconds"]
    wall = statistics.median(w for w, _ in ours)
    cpu = statistics.median(c for _, c in ours)
    ours_rate, plain_rate = seconds / wall, seconds / plain_wall
    speedup = plain_wall / wall

    ours_people = sorted(entry["name"] for entry in result["timeline"] if entry["known"])
    strangers = sum(1 for entry in result["timeline"] if not entry["known"])
    plain_people = sorted(name for name in plain["faces"] if name != "unknown")
    rows = [
        Row(f"video: s of video per wall s ({seconds:.1f} s clip; ratio = ours / plain)", plain_rate, ours_rate,
            ours_rate / plain_rate, ">= 10", at_least(speedup, 10)),
        Row("video: ours x real time (start-up excluded)", None, ours_rate, None, ">= 2", at_least(ours_rate, 2)),
        Row("video: wall s for the clip", plain_wall, wall, wall / plain_wall),
        Row("video: CPU s for the clip", plain_cpu, cpu, cpu / plain_cpu),
        Row("video: frames looked at / faces encoded", f"{plain['frames']}/{sum(plain['faces'].values())}",
            f"{result['samples']}/{result['encodings']}"),
        Row("video: people named (same on both sides?)", ", ".join(plain_people) or "-", ", ".join(ours_people) or "-",
            None, "same", plain_people == ours_people),
        Row("video: unknown faces", f"{plain['faces'].get('unknown', 0)} frames", f"{strangers} distinct"),
    ]
    details = {"clip": str(clip), "seconds": seconds, "rounds": [{"wall": w, "cpu": c} for w, c in ours],
               "plain": {**plain, "wall": plain_wall, "cpu": plain_cpu},
               "ours": {"timeline": [{key: entry[key] for key in ("name", "ranges", "frames", "confidence")}
                                     for entry in result["timeline"]], "samples": result["samples"],
                        "encodings": result["encodings"]}}
    return rows, details


def main() -> int:
    import tempfile

    from bench.report import table

    began = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="pyrecognizer-bench-video-") as workdir:
        rows, _ = video_section(Path(workdir), say=lambda message: print(message, file=sys.stderr, flush=True))
    print(f"load average {' / '.join(f'{value:.2f}' for value in os.getloadavg())}; "
          f"{time.perf_counter() - began:.0f} s in all")
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
