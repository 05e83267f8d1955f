"""``python -m bench``: run the sections, print the table, write bench/results/latest.json.

    python -m bench                         full run (all 2,857 lfw/people photos; ~3 min idle)
    python -m bench --quick                 ~1 min: 1 round, 600 lfw photos, fewer requests
    python -m bench --only predict,serve    some sections only
    python -m bench --photos 1000           training figures on a stratified 1,000 photos
    python -m bench --only people           enrolment into 3,000 / 30,000 photos, storage, stranger budget
    python -m bench --only small --draws 50 small galleries: our rule against the plain recipe
    python -m bench --only verify           /verify's pipeline against the old one on LFW-style pairs
    python -m bench --only mirror           the mirror pass's radius; decisions from the first pass
                                            where settled against always mirrored (issue 27)
    python -m bench --only soak --minutes 30  a long day of mixed load on a real server (issue 27;
                                            not in the default run)
    python -m bench --only gallery          galleries of 10^3..10^6 encodings (issue 16; not in the
                                            default run: ~15 min, 10^6 needs ~6 GB; --gallery-sizes)

Progress goes to stderr; stdout holds the header and the table. The exit status is 1 when a
section could not run, 0 otherwise (a missed target is a figure, not a failure).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
import traceback
from datetime import datetime
from pathlib import Path

from bench import ROOT, Row, faces_dir

SECTIONS = ("predict", "train", "serve", "people", "video", "small", "verify", "mirror", "gallery", "soak")
DEFAULT_SECTIONS = ("predict", "train", "serve", "people", "video", "small", "verify", "mirror")
RESULTS = ROOT / "bench" / "results" / "latest.json"
# (full, quick): predict rounds, training photos, 1-worker photos, plain CPU photos, requests 4 / 1 client
PRESETS = {"rounds": (3, 1), "photos": (2857, 600), "single_photos": (400, 200), "plain_photos": (150, 60),
           "requests": (500, 120), "requests_one": (200, 60), "draws": (50, 10)}


def arguments(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a ~1-minute run with smaller counts")
    parser.add_argument("--only", default=",".join(DEFAULT_SECTIONS), help="comma-separated: " + ",".join(SECTIONS))
    parser.add_argument("--gallery-sizes", default="1000,10000,100000,1000000", help="the gallery section's sizes")
    parser.add_argument("--gallery-requests", type=int, default=40, help="POST /predict per gallery size")
    parser.add_argument("--photos", type=int, help="lfw/people photos for the 2-worker run (default all; quick 600)")
    parser.add_argument("--single-photos", type=int, help="photos for the 1-worker run (default 400; quick 200)")
    parser.add_argument("--plain-photos", type=int, help="photos for the plain recipe's CPU/photo (150; quick 60)")
    parser.add_argument("--rounds", type=int, help="predict rounds per photo (default 3; quick 1)")
    parser.add_argument("--requests", type=int, help="POST /predict from 4 clients (default 500; quick 120)")
    parser.add_argument("--requests-one", type=int, help="POST /predict from 1 client (default 200; quick 60)")
    parser.add_argument("--draws", type=int, help="small galleries drawn (default 50; quick 10)")
    parser.add_argument("--minutes", type=float, default=30, help="the soak section's length (default 30; not in the default run)")
    parser.add_argument("--seed", type=int, default=0, help="the small galleries' draws (default 0, the prior's; 1 checks it)")
    parser.add_argument("--server-threads", type=int, help="override server.threads for the serve section")
    parser.add_argument("--faces", help="the shared photo folder (default $PYRECOGNIZER_FACES or ../shared/faces)")
    parser.add_argument("--json", default=str(RESULTS), help=f"where to write the results (default {RESULTS})")
    parser.add_argument("--keep", action="store_true", help="keep the temporary data folders (logs, models)")
    args = parser.parse_args(argv)
    args.only = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = set(args.only) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown section(s) {', '.join(sorted(unknown))}; choose among {', '.join(SECTIONS)}")
    for name, (full, quick) in PRESETS.items():
        if getattr(args, name) is None:
            setattr(args, name, quick if args.quick else full)
    args.single_photos = min(args.single_photos, args.photos)
    args.plain_photos = min(args.plain_photos, args.photos)
    return args


def say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def machine() -> dict:
    from utils.training import library_versions

    try:
        import dlib
        blas = bool(dlib.DLIB_USE_BLAS)
    except ImportError:
        blas = None
    return {"cores": os.cpu_count(), "load_average": [round(value, 2) for value in os.getloadavg()],
            "platform": platform.platform(), "versions": library_versions(), "dlib_uses_blas": blas}


def cell(value, digits: int) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def table(rows: list[Row]) -> str:
    header = ("figure", "plain", "ours", "ratio", "target", "met?")
    lines = [(row.figure, cell(row.plain, row.digits), cell(row.ours, row.digits), cell(row.ratio, 2),
              row.target or "-", {True: "yes", False: "NO", None: ""}[row.met]) for row in rows]
    widths = [max(len(line[column]) for line in [header, *lines]) for column in range(len(header))]
    numeric = {1, 2, 3}

    def formatted(line) -> str:
        return " | ".join(text.rjust(width) if column in numeric else text.ljust(width)
                          for column, (text, width) in enumerate(zip(line, widths))).rstrip()

    rule = "-+-".join("-" * width for width in widths)
    return "\n".join([formatted(header), rule, *(formatted(line) for line in lines)])


def header(args, started: dict, finished_load, faces: Path, details: dict) -> str:
    versions = started["versions"]
    counts = []
    if "predict" in details:
        counts.append("predict (a) {} + (b) {} photos, {} round(s)".format(
            details["predict"].get("(a) >=0.5 MP", {}).get("photos", "?"),
            details["predict"].get("(b) celebrities/val", {}).get("photos", "?"), args.rounds))
    if "train" in details:
        train = details["train"]
        counts.append("train {:,} of {:,} lfw/people photos (1 worker: {:,}; plain and ours side by side: {:,})".format(
            train["two_workers"]["photos"], train["lfw_photos"], train["one_worker"]["photos"],
            train["side_by_side"]["plain"]["photos"]))
    if "serve" in details:
        serve = details["serve"]
        counts.append("serve {} + {} requests ({} workers x {} threads)".format(
            serve["one_client"]["requests"], serve["four_clients"]["requests"], serve["server"]["workers"],
            serve["server"]["threads"]))
    load = " / ".join(f"{value:.2f}" for value in started["load_average"])
    return "\n".join([
        f"PyRecognizer bench (issue 4), {datetime.now():%Y-%m-%d %H:%M}, {'quick' if args.quick else 'full'} run",
        f"machine: {started['cores']} cores; load average (1/5/15 min) {load} at start, "
        f"{' / '.join(f'{value:.2f}' for value in finished_load)} at end",
        f"python {versions.get('python')}, face_recognition {versions.get('face_recognition', '?')}, "
        f"scikit-learn {versions.get('scikit-learn', '?')}; photos: {faces}",
        f"dlib: ours {versions.get('dlib') or versions.get('dlib-bin', '?')} "
        f"(BLAS {'on' if started['dlib_uses_blas'] else 'off'}); plain: {plain_dlib(details)}",
        *(f"  {line}" for line in counts),
        "ratio = ours / plain unless the figure says otherwise; times are wall clock, medians per photo",
        "predict: plain = load_image_file + face_locations (HOG, upsample 1) + face_encodings + KNN,",
        "         in a child process; \"plain on our dlib\" rows run it over ours' dlib build;",
        "         ours = Service.predict(bytes) without the annotated JPEG (decode, detect, encode, decide)",
        *busy_warning(started["cores"], started["load_average"][0],
                      details.get("predict", {}).get("plain_wall_over_cpu")),
    ])


def plain_dlib(details: dict) -> str:
    """The dlib build of the plain side, as its child process reported it."""
    for section in details.values():
        if "dlib" in section:
            build = section["dlib"]["plain"]
            return f"dlib-bin {build['version']} (BLAS {'on' if build['blas'] else 'off'}), as installed"
    return "?"


def busy_warning(cores: int, load_at_start: float, wall_over_cpu: float | None) -> list[str]:
    """Say when other processes competed for the cores: more runnable processes than cores
    just before the bench began (later load averages include the bench's own processes), or
    the plain predict side, single-threaded, taking longer than its CPU time."""
    seen = []
    if load_at_start > cores:
        seen.append(f"1-min load {load_at_start:.1f} on {cores} cores at start")
    if wall_over_cpu is not None and wall_over_cpu > 1.25:
        seen.append(f"plain predict's wall time {wall_over_cpu:.1f}x its CPU time")
    if not seen:
        return []
    seen = "; ".join(seen)
    return [f"WARNING: the machine was busy ({seen}):",
            "         wall times are inflated, the scaling ratios (2 vs 1 worker, 4 vs 1 client) understate the",
            "         engine, and ours' predict CPU rises too (scikit-learn's OpenMP threads wait for busy cores)"]


def run_section(name: str, args, faces: Path, workdir: Path):
    if name == "predict":
        from bench.predict import predict_section

        return predict_section(faces, workdir, args.rounds, say=say)
    if name == "train":
        from bench.train import train_section

        return train_section(faces, workdir, args.photos, args.single_photos, args.plain_photos, say=say)
    if name == "people":
        from bench.people import people_section

        return people_section(faces, workdir, args.quick, say=say)

    if name == "video":
        from bench.video import video_section

        return video_section(workdir, rounds=args.rounds, say=say)

    if name == "small":
        from bench.small import small_section

        # encodings kept in the project's own cache (dataset/cache, by content): later runs skip encoding
        return small_section(faces, workdir, args.draws, cache=ROOT / "dataset" / "cache", seed=args.seed, say=say)
    if name == "verify":
        from bench.verify import verify_section

        return verify_section(faces, workdir, cache=ROOT / "dataset" / "cache", say=say)

    if name == "mirror":
        from bench.mirror import mirror_section

        return mirror_section(faces, workdir, cache=ROOT / "dataset" / "cache", draws=args.draws, say=say)
    if name == "soak":
        from bench.soak import soak_section

        return soak_section(faces, workdir, args.minutes, say=say)
    if name == "gallery":
        from bench.gallery import gallery_section

        sizes = [int(float(size)) for size in args.gallery_sizes.split(",")]
        return gallery_section(faces, workdir, sizes, args.gallery_requests, say=say)
    from bench.serve import serve_section

    return serve_section(faces, workdir, args.requests, args.requests_one, args.server_threads, say=say)


def main(argv=None) -> int:
    args = arguments(argv)
    faces = faces_dir(args.faces)
    started = machine()
    say(f"{started['cores']} cores, load average {started['load_average']}; sections: {', '.join(args.only)}")
    workdir = Path(tempfile.mkdtemp(prefix="pyrecognizer-bench-"))
    rows, details, failed = [], {}, []
    began = time.perf_counter()
    try:
        for name in args.only:
            section_began = time.perf_counter()
            try:
                section_rows, details[name] = run_section(name, args, faces, workdir / name)
                rows += section_rows
            except Exception as exc:  # one broken section must not hide the others' figures
                traceback.print_exc(file=sys.stderr)
                failed.append(name)
                details[name] = {"error": repr(exc)}
                rows.append(Row(f"{name}: section failed ({type(exc).__name__}, see stderr)", None, None,
                                met=False))
            say(f"{name}: {time.perf_counter() - section_began:.0f} s")
    finally:
        if args.keep:
            say(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    finished_load = os.getloadavg()
    printable = {name: value for name, value in details.items() if "error" not in value}
    print(header(args, started, finished_load, faces, printable))
    print()
    print(table(rows))
    met = [row.met for row in rows if row.met is not None]
    print(f"\ntargets met: {sum(met)} of {len(met)}; {time.perf_counter() - began:.0f} s in all")
    result = {"date": datetime.now().isoformat(timespec="seconds"), "mode": "quick" if args.quick else "full",
              "args": {key: value for key, value in vars(args).items() if key != "json"},
              "machine": {**started, "load_average_at_end": [round(value, 2) for value in finished_load]},
              "seconds": round(time.perf_counter() - began, 1), "rows": [row.as_dict() for row in rows],
              "details": details, "failed_sections": failed}
    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2, default=str))
    say(f"wrote {path}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
