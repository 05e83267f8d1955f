"""``python -m bench``: run the sections, print the table, write bench/results/latest.json
(and the same under the run's name, e.g. 2026-12-08_0040-full.json; see bench/report.py).

    python -m bench                         full run (all 2,857 lfw/people photos; ~3 min idle)
    python -m bench --quick                 ~1 min: 1 round, 600 lfw photos, fewer requests
    python -m bench --only predict,serve    some sections only
    python -m bench --photos 1000           training figures on a stratified 1,000 photos
    python -m bench --only people           enrolment into 3,000 / 30,000 photos, storage, stranger budget
    python -m bench --only small --draws 50 small galleries: our rule against the plain recipe
    python -m bench --only verify           /verify's pipeline against the old one on LFW-style pairs
    python -m bench --only inbox            a camera day: the face inbox teaching a one-photo gallery
                                            (issue 25; --seed; not in the default run: ~5 min)
    python -m bench --only mirror           the mirror pass's radius; decisions from the first pass
                                            where settled against always mirrored (issue 27)
    python -m bench --only soak --minutes 30  a long day of mixed load on a real server (issue 27;
                                            not in the default run)
    python -m bench --only gallery          galleries of 10^3..10^6 encodings (issue 16; not in the
                                            default run: ~15 min, 10^6 needs ~6 GB; --gallery-sizes)
    python -m bench --only dialects         CompreFace's photo listing and verify at 10^5 encodings
                                            (issue 24; not in the default run; --quick: 10^4)
    python -m bench --only cameras          camera latency, capacity, a --minutes soak (issue 26; not in
                                            the default run: ~20 min, or ~6 with --quick --minutes 2)

Progress goes to stderr; stdout holds the header and the table. The exit status is 1 when a
section could not run, 0 otherwise (a missed target is a figure, not a failure).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
import traceback
from datetime import datetime
from pathlib import Path

from bench import ROOT, Row, faces_dir
from bench.report import header, machine, run_name, say, table

SECTIONS = ("predict", "train", "serve", "people", "video", "small", "verify", "mirror", "gallery", "dialects",
            "cameras", "inbox", "soak")
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
    parser.add_argument("--gallery-parts", default="serve,curve",
                        help="the gallery section's parts: serve (import, load, HTTP per size), curve (recognition "
                             "against distractors, bench/distractors.py)")
    parser.add_argument("--photos", type=int, help="lfw/people photos for the 2-worker run (default all; quick 600)")
    parser.add_argument("--single-photos", type=int, help="photos for the 1-worker run (default 400; quick 200)")
    parser.add_argument("--plain-photos", type=int, help="photos for the plain recipe's CPU/photo (150; quick 60)")
    parser.add_argument("--rounds", type=int, help="predict rounds per photo (default 3; quick 1)")
    parser.add_argument("--requests", type=int, help="POST /predict from 4 clients (default 500; quick 120)")
    parser.add_argument("--requests-one", type=int, help="POST /predict from 1 client (default 200; quick 60)")
    parser.add_argument("--draws", type=int, help="small galleries drawn (default 50; quick 10)")
    parser.add_argument("--minutes", type=float, help="the soak section's length (default 30) and the cameras "
                                                     "section's soak (default 10); neither is in the default run")
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

    if name == "dialects":
        from bench.dialects import dialects_section

        return dialects_section(faces, workdir, 10_000 if args.quick else 100_000, say=say)

    if name == "cameras":
        from bench.cameras import cameras_section

        return cameras_section(workdir, args.minutes or 10.0, args.quick, say=say)

    if name == "inbox":
        from bench.inbox import inbox_section

        return inbox_section(faces, workdir, seed=args.seed, say=say)

    if name == "mirror":
        from bench.mirror import mirror_section

        return mirror_section(faces, workdir, cache=ROOT / "dataset" / "cache", draws=args.draws, say=say)
    if name == "soak":
        from bench.soak import soak_section

        return soak_section(faces, workdir, args.minutes or 30.0, say=say)

    if name == "gallery":
        from bench.gallery import gallery_section

        sizes = [int(float(size)) for size in args.gallery_sizes.split(",")]
        return gallery_section(faces, workdir, sizes, args.gallery_requests, say=say,
                               parts=[part.strip() for part in args.gallery_parts.split(",")])
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
    # the same run under its own name beside it, for docs/performance.md (python -m bench.report --docs)
    named = path.with_name(run_name(result))
    named.write_text(path.read_text())
    say(f"wrote {path} and {named.name}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
