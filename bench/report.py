"""The bench's report: progress lines, the machine, the figure table, and the results file
rendered as the Markdown table of docs/performance.md.

Every section (and ``python -m bench``, ``bench.gallery``, ``bench.video`` run alone) prints
through these, so the sections never import ``bench.__main__``.

    python -m bench.report                   # latest.json's table as Markdown, on stdout
    python -m bench.report --docs RUN.json   # write RUN.json's table into docs/performance.md
"""
from __future__ import annotations

import os
import platform
import sys
import time
from datetime import datetime
from pathlib import Path

from bench import Row


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




# The results file as docs/performance.md shows it: a table between these markers, the opening
# one naming the run it was made from (a file under bench/runs/, committed), so that a test
# can render it again and fail when the page and the run differ.
DOCS_PAGE = Path(__file__).resolve().parent.parent / "docs" / "performance.md"
RUNS = Path(__file__).resolve().parent / "runs"
BEGIN, END = "<!-- bench run: {} -->", "<!-- end of bench run -->"


def run_name(result: dict) -> str:
    """The file name a run is kept under: its date and mode, e.g. 2026-12-08_0040-quick.json."""
    return f"{datetime.fromisoformat(result['date']):%Y-%m-%d_%H%M}-{result['mode']}.json"


def markdown(result: dict) -> str:
    """``result`` (what ``python -m bench`` writes) as Markdown: the machine and date, then the
    figure table with the same cells as the terminal's."""
    machine_ = result["machine"]
    versions = machine_.get("versions", {})
    load = " / ".join(f"{value:.2f}" for value in machine_["load_average"])
    load_end = " / ".join(f"{value:.2f}" for value in machine_.get("load_average_at_end", []))
    lines = [
        f"Run of {datetime.fromisoformat(result['date']):%Y-%m-%d %H:%M}, {result['mode']} "
        f"(`python -m bench{' --quick' if result['mode'] == 'quick' else ''}"
        f"{' --only ' + ','.join(result['args']['only']) if result['args'].get('only') else ''}`), "
        f"{result['seconds']:.0f} s.",
        "",
        f"Machine: {machine_['cores']} cores, {machine_['platform']}; dlib {versions.get('dlib') or versions.get('dlib-bin', '?')} "
        f"(BLAS {'on' if machine_.get('dlib_uses_blas') else 'off'}), Python {versions.get('python', '?')}; "
        f"load average (1/5/15 min) {load} at start, {load_end} at end.",
        "",
        "| figure | plain | ours | ratio | target | met? |",
        "|---|--:|--:|--:|---|---|",
    ]
    for row in result["rows"]:
        digits = 2 if row.get("digits") is None else row["digits"]
        cells = (row["figure"], cell(row["plain"], digits), cell(row["ours"], digits), cell(row["ratio"], 2),
                 row["target"] or "-", {True: "yes", False: "NO", None: ""}[row["met"]])
        lines.append("| " + " | ".join(text.replace("|", "\\|") for text in cells) + " |")
    return "\n".join(lines)


def docs_block(run: Path) -> str:
    """The block of docs/performance.md made from ``run`` (a path under the project)."""
    import json

    relative = run.resolve().relative_to(DOCS_PAGE.parent.parent).as_posix()
    return "\n".join([BEGIN.format(relative), markdown(json.loads(run.read_text())), END])


def page_with_run(page: str, run: Path) -> str:
    """``page`` with its bench block replaced by ``run``'s."""
    start = page.index(BEGIN.split("{}")[0])
    stop = page.index(END, start) + len(END)
    return page[:start] + docs_block(run) + page[stop:]


def main(argv=None) -> int:
    import argparse
    import json

    parser = argparse.ArgumentParser(prog="python -m bench.report", description=__doc__.split("\n\n")[0])
    parser.add_argument("run", nargs="?", default=str(RUNS.parent / "results" / "latest.json"),
                        help="a results file (default bench/results/latest.json)")
    parser.add_argument("--docs", action="store_true",
                        help="keep the run under bench/runs/ and write its table into docs/performance.md")
    args = parser.parse_args(argv)
    run = Path(args.run)
    if not args.docs:
        print(markdown(json.loads(run.read_text())))
        return 0
    if run.resolve().parent != RUNS.resolve():
        kept = RUNS / run_name(json.loads(run.read_text()))
        RUNS.mkdir(exist_ok=True)
        kept.write_text(run.read_text())
        run = kept
    DOCS_PAGE.write_text(page_with_run(DOCS_PAGE.read_text(), run))
    print(f"docs/performance.md now shows {run.relative_to(RUNS.parent.parent)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
