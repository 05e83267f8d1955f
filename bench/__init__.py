"""PyRecognizer's benchmark (issue 4): our pipeline against the plain face_recognition recipe.

``python -m bench`` (``--quick`` for a short run, ``--only predict,train,serve``) prints one
table, figure | plain | ours | ratio | target | met?, and writes it as JSON to
bench/results/latest.json. Both sides run in the same process, on the same photos, in the
same run, so that the ratios hold however loaded the machine happens to be.

This module holds what the sections share: where the photos are, the engine's configuration
as the bench uses it, and the Row every section reports.
"""
from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PHOTOS_HINT = ("real face photos are missing: put them in ../shared/faces beside the project "
               "or set PYRECOGNIZER_FACES (see ../shared/faces/README.md)")


def faces_dir(override: str | None = None) -> Path:
    """Return the shared photo folder: ``override``, $PYRECOGNIZER_FACES or ../shared/faces."""
    folder = Path(override or os.environ.get("PYRECOGNIZER_FACES") or ROOT.parent / "shared" / "faces")
    if not (folder / "celebrities").is_dir():
        raise SystemExit(PHOTOS_HINT)
    return folder


def engine_config(data_dir: Path, **sections):
    """Return the service's configuration over ``data_dir``: conf/conf.json's defaults.

    PYRECOGNIZER_* variables are ignored (``environ={}``) so that a developer's shell cannot
    change what is measured; the dashboard is off because these in-process services never
    serve HTTP (the server section runs the real server, dashboard and all).
    """
    from conf.config import load_config

    overrides: dict = {"data_dir": str(data_dir), "dashboard": {"enabled": False}}
    for name, values in sections.items():
        overrides.setdefault(name, {}).update(values)
    return load_config(None, overrides, environ={})


@dataclass
class Row:
    """One line of the table. ``ratio`` is ours / plain unless the figure says otherwise;
    ``met`` is None for figures that have no target (shown for context)."""

    figure: str
    plain: float | int | str | None
    ours: float | int | str | None
    ratio: float | None = None
    target: str = ""
    met: bool | None = None
    digits: int = 2

    def as_dict(self) -> dict:
        """The row as the results file keeps it (``digits`` too: docs/performance.md's table
        shows the cells as the terminal does)."""
        return asdict(self)


def at_most(value: float | None, limit: float) -> bool | None:
    return None if value is None else value <= limit


def at_least(value: float | None, limit: float) -> bool | None:
    return None if value is None else value >= limit


def ratio(ours: float | None, plain: float | None) -> float | None:
    return None if not plain or ours is None else ours / plain


def timed(function):
    """``function`` returning (its answer, wall s, CPU s of this process): how every side of
    the bench is timed, ours here and the plain recipe in its child process."""
    def measured(*args):
        wall, cpu = time.perf_counter(), time.process_time()
        answer = function(*args)
        return answer, time.perf_counter() - wall, time.process_time() - cpu

    return measured
