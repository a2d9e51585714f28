"""Progress bars for long work (tqdm), silenced with ``SPKERAS_QUIET=1`` or :func:`set_quiet`."""

from __future__ import annotations

import os
import sys
from typing import Iterable, TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")
_quiet = os.environ.get("SPKERAS_QUIET", "") not in ("", "0")


def set_quiet(quiet: bool) -> None:
    """Turn every progress bar off (True) or on (False)."""
    global _quiet
    _quiet = quiet


def progress_bar(items: Iterable[T], desc: str, unit: str = "it", total: int | None = None) -> Iterable[T]:
    """Wrap ``items`` in a tqdm bar on stderr unless progress is silenced."""
    return tqdm(items, desc=desc, unit=unit, total=total, disable=_quiet, leave=False, dynamic_ncols=True)


def announce(phase: str) -> None:
    """One labelled line on stderr saying which phase of a long job is running (unless quiet)."""
    if not _quiet:
        tqdm.write(phase, file=sys.stderr)
