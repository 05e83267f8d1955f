"""The documentation cannot drift from the code.

- The site builds with mkdocs in strict mode: a dead link, a missing anchor or a page left out
  of mkdocs.yml's nav fails. The README's own links point to files and headings that exist.
- The configuration reference is what conf/reference.py writes from conf/config.py now, and
  every setting has a comment saying what it means.
- The benchmark table is what bench/report.py renders from the named run.
- Every command in a ```sh block of the README and docs/ is run: curl lines against a real
  server, `main.py` lines against a data folder of their own, in the page's order, with only
  the address, the token and the files of this machine put in; `make` targets and
  `python -m bench` options are checked to exist, and `export` lines to set a variable
  conf/config.py reads. docs/cluster.md's block is
  tests/test_cluster.py's.
"""
from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conf.config import ENVIRONMENT
from tests.support import ROOT, Server, video_dir, zipped

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
RUN_ELSEWHERE = {ROOT / "docs" / "cluster.md": "tests/test_cluster.py"}
ADDRESS = "http://127.0.0.1:8081"


def sh_blocks(page: Path) -> list[list[str]]:
    """The command lines of ``page``'s ```sh blocks (comments and blank lines left out)."""
    blocks = re.findall(r"^```sh\n(.*?)^```", page.read_text(), flags=re.S | re.M)
    return [[line for line in block.splitlines() if line.strip() and not line.lstrip().startswith("#")]
            for block in blocks]


def shown_commands() -> list[tuple[Path, str]]:
    return [(page, line) for page in PAGES for block in sh_blocks(page) for line in block]


def kind_of(line: str) -> str | None:
    words = shlex.split(line, comments=True)
    if not words:
        return None
    if words[0] == "curl":
        return "curl"
    if words[0] == "make":
        return "make"
    if words[0] == "export" and len(words) == 2 and "=" in words[1]:
        return "env"
    if words[0].endswith("python") and words[1:2] == ["main.py"]:
        return "cli"
    if words[0].endswith("python") and words[1:3] == ["-m", "bench"]:
        return "bench"
    if words[0].endswith("python") and words[1:3] == ["-m", "pytest"]:
        return "pytest"
    return None


# --- the site and the links ----------------------------------------------------------------


def test_the_site_builds_in_strict_mode(tmp_path):
    built = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                           cwd=ROOT, capture_output=True, text=True, timeout=300,
                           env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert built.returncode == 0, built.stderr[-3000:]
    assert "WARNING" not in built.stderr, built.stderr[-3000:]
    assert (tmp_path / "site" / "configuration" / "index.html").exists()


def slug(heading: str) -> str:
    """Python-Markdown's toc slug of a heading (what mkdocs links to)."""
    text = re.sub(r"[^\w\s-]", "", heading).strip().lower()
    return re.sub(r"[-\s]+", "-", text)


def test_the_readmes_links_point_to_files_and_headings_that_exist():
    readme = (ROOT / "README.md").read_text()
    links = re.findall(r"\]\(([^)\s]+)\)", readme)
    local = [link for link in links if not re.match(r"[a-z]+://", link)]
    assert len(local) >= 10, local
    broken = []
    for link in local:
        path, _, anchor = link.partition("#")
        target = ROOT / path
        if not target.exists():
            broken.append(link)
        elif anchor and anchor not in {slug(heading) for heading in
                                       re.findall(r"^#+ (.+)$", target.read_text(), flags=re.M)}:
            broken.append(link)
    assert not broken, f"README links to nothing: {broken}"


def test_the_readme_stays_short_and_shows_the_two_commands():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 200
    assert "make run" in readme and "make test" in readme


def test_pending_links_are_opened_once_their_page_exists():
    """people.md and integrations.md hold commented-out links to pages other work writes: once
    such a page is in docs/, its link must be opened (and the page put in the nav)."""
    waiting = []
    for page in PAGES:
        for comment in re.findall(r"<!--(.*?)-->", page.read_text(), flags=re.S):
            for target in re.findall(r"\]\(([\w-]+\.md)\)", comment):
                if (ROOT / "docs" / target).exists():
                    waiting.append(f"{page.name}: uncomment the link to {target}")
    assert not waiting, waiting


# --- generated parts -----------------------------------------------------------------------


def test_every_setting_is_documented_and_the_reference_is_the_codes():
    from conf.reference import PAGE, page_with_reference, undocumented

    assert undocumented() == [], ("settings without a # comment in conf/config.py saying what they mean: "
                                  + ", ".join(undocumented()))
    page = PAGE.read_text()
    assert page == page_with_reference(page), "docs/configuration.md is out of date: run python -m conf.reference"


def test_a_setting_without_a_comment_is_named():
    from conf.reference import field_comments

    source = ("class Video:\n    sample_fps: float = setting(min=0.1)  # frames a second\n"
              "    # tracked faces are encoded again after this many seconds\n    confirm_seconds: float\n"
              "    gap_seconds: float\n")
    assert field_comments(source) == {("Video", "sample_fps"): "frames a second",
                                      ("Video", "confirm_seconds"): "tracked faces are encoded again after this many seconds",
                                      ("Video", "gap_seconds"): ""}


def test_the_performance_table_is_the_named_runs():
    from bench.report import BEGIN, DOCS_PAGE, docs_block

    page = DOCS_PAGE.read_text()
    named = re.search(re.escape(BEGIN).replace(re.escape("{}"), r"(\S+)"), page)
    assert named, "docs/performance.md names no bench run"
    run = ROOT / named[1]
    assert run.exists(), f"docs/performance.md shows {named[1]}, which is not in the repository"
    result = json.loads(run.read_text())
    assert result["rows"] and result["machine"]["cores"] and result["date"]
    assert docs_block(run) in page, ("docs/performance.md's table differs from its run: "
                                     f"python -m bench.report --docs {named[1]}")


# --- the commands --------------------------------------------------------------------------


def test_every_shown_command_is_one_a_test_runs():
    unclaimed = [f"{page.relative_to(ROOT)}: {line}" for page, line in shown_commands()
                 if page not in RUN_ELSEWHERE and kind_of(line) is None]
    assert not unclaimed, f"commands no test runs (see tests/test_docs.py): {unclaimed}"
    assert len(shown_commands()) >= 20


def test_shown_make_targets_bench_options_and_test_files_exist():
    from bench.__main__ import arguments

    makefile = (ROOT / "Makefile").read_text()
    for page, line in shown_commands():
        words = shlex.split(line, comments=True)
        kind = kind_of(line)
        if kind == "make":
            for target in words[1:]:
                assert re.search(rf"^{re.escape(target)}:", makefile, flags=re.M), f"{page.name}: no make target {target}"
        elif kind == "bench":
            arguments(words[3:])  # exits (SystemExit) on an option the bench does not have
        elif kind == "pytest":
            assert all((ROOT / word).exists() for word in words[3:] if not word.startswith("-")), line
        elif kind == "env":
            assert words[1].split("=", 1)[0] in ENVIRONMENT, f"{page.name}: {line} sets no variable the service reads"


def the_files_pages_name(folder: Path, faces: Path) -> Path:
    """The photos, zip and video the pages' commands name, made of the shared real ones."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(faces / "knn" / "train" / "obama" / "obama.jpg", folder / "ada1.jpg")
    shutil.copy(faces / "knn" / "train" / "obama" / "obama2.jpg", folder / "ada2.jpg")
    shutil.copy(faces / "knn" / "test" / "obama_and_biden.jpg", folder / "group.jpg")
    shutil.copy(video_dir() / "short_hamilton_clip.mp4", folder / "clip.mp4")
    # the gallery of photos.zip: knn/train's people but the one ada1/ada2 show, whom the pages enrol
    gallery = folder.parent / "gallery"
    shutil.copytree(faces / "knn" / "train", gallery, ignore=lambda where, names: ["obama"] if "obama" in names else [])
    zipped(gallery, folder / "photos.zip")
    return folder


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    server = Server(tmp_path_factory.mktemp("docs-server"),
                    config={"dashboard": {"enabled": False}, "faces": {"workers": 1}}).start()
    yield server
    server.stop()


def answered(line: str, output: str, folder: Path) -> dict:
    """The JSON a curl line answered (printed, or written with -o)."""
    if not output.strip():
        written = shlex.split(line)
        return json.loads((folder / written[written.index("-o") + 1]).read_text())
    return json.loads(output)


def succeeded(body) -> bool:
    """An envelope with status OK, a DeepStack answer with success, a CompreFace result, or an
    OpenAPI document."""
    if isinstance(body, dict) and "response" in body:
        return body["response"]["status"] == "OK"
    if isinstance(body, dict) and "success" in body:
        return body["success"] is True
    return isinstance(body, dict) and ("result" in body or "openapi" in body)


def run_curl(line: str, server: Server, folder: Path) -> dict:
    command = line.replace(ADDRESS, server.url)
    done = subprocess.run(["bash", "-c", command], cwd=folder, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "TOKEN": server.token})
    assert done.returncode == 0, (line, done.stderr)
    body = answered(line, done.stdout, folder)
    assert succeeded(body), (line, done.stdout[:1000])
    answer = body.get("response") if isinstance(body, dict) else None
    data = (answer or {}).get("data")
    job_url = (answer or {}).get("job_url") or (data.get("job_url") if isinstance(data, dict) else None)
    if job_url:  # a reader waits for a job before the next step
        assert server.wait_for_job(job_url)["state"] == "done", line
    return body


def run_cli(line: str, folder: Path, data_dir: Path) -> None:
    command = re.sub(r"^(\.venv/bin/)?python main\.py", f"{shlex.quote(sys.executable)} {shlex.quote(str(ROOT / 'main.py'))}",
                     line)
    done = subprocess.run(["bash", "-c", command], cwd=folder, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYRECOGNIZER_DATA_DIR": str(data_dir)})
    assert done.returncode == 0, (line, done.stdout[-2000:], done.stderr[-2000:])
    for printed in done.stdout.splitlines():
        if printed.startswith("{"):
            body = json.loads(printed)
            assert "response" not in body or body["response"]["status"] == "OK", (line, printed[:1000])


@pytest.mark.e2e
@pytest.mark.slow
def test_every_curl_and_cli_line_of_the_pages_runs(server, faces, tmp_path):
    """Page by page, in the page's order: curl lines against one server (jobs waited for), CLI
    lines against a data folder of the page's own, as a reader runs them one after the other."""
    folder = the_files_pages_name(tmp_path / "files", faces)
    ran = 0
    for page in PAGES:
        if page in RUN_ELSEWHERE:
            continue
        data_dir = tmp_path / "cli" / page.stem
        for block in sh_blocks(page):
            for line in block:
                if kind_of(line) == "curl":
                    run_curl(line, server, folder)
                elif kind_of(line) == "cli":
                    run_cli(line, folder, data_dir)
                else:
                    continue
                ran += 1
    assert ran >= 20, ran
