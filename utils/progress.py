"""The CLI's progress bar: one tqdm bar on stderr, driven as a ``ProgressCallback``."""
from __future__ import annotations

import contextlib
import sys
from typing import Callable, Iterator

from tqdm import tqdm

ProgressCallback = Callable[[int, int, str], None]


@contextlib.contextmanager
def progress_bar(unit: str = "photo", *, only_on_a_terminal: bool = False) -> Iterator[ProgressCallback]:
    """Yield ``progress(done, total, step)`` drawing a bar on stderr; the bar is closed on exit.

    ``only_on_a_terminal`` hides the bar when stderr is not a terminal (tqdm's ``disable=None``).
    """
    bar = tqdm(total=0, unit=unit, file=sys.stderr, disable=None if only_on_a_terminal else False)

    def progress(done: int, total: int, step: str) -> None:
        bar.total = total
        bar.set_description(step)
        bar.n = done
        bar.refresh()

    try:
        yield progress
    finally:
        bar.close()
