"""Numbers as table cells: bytes, shares, accuracies, durations.

Each formatter returns :data:`MISSING` (``—``) for a missing value (None), so a
table shows a dash where a run did not record a number.
"""

from __future__ import annotations

import math
from typing import Any

MISSING = "—"


def human_bytes(size: float | None) -> str:
    """``31.1 kB``, ``87.6 MB`` (decimal units); ``—`` for None."""
    if size is None or not math.isfinite(size):
        return MISSING
    value, unit = float(size), "B"
    for unit in ("B", "kB", "MB", "GB", "TB", "PB"):  # noqa: B007  (unit used after)
        if abs(value) < 999.5:
            break
        value /= 1000.0
    return f"{value:.0f} B" if unit == "B" else f"{value:.3g} {unit}"


def fraction_of_full(fraction: float | None) -> str:
    """A payload share as a ratio: ``1/2,650 of the full model``; ``—`` if unknown."""
    if fraction is None or not math.isfinite(fraction) or fraction <= 0:
        return MISSING
    if fraction >= 1:
        return f"{fraction:.2g}× the full model"
    return f"1/{round(1 / fraction):,} of the full model"


def percent(value: float | None, digits: int = 3) -> str:
    """``0.0377%``, ``12.5%``, ``100%`` (significant digits); ``—`` for None."""
    if value is None or not math.isfinite(value):
        return MISSING
    return f"{100 * value:.{digits}g}%"


def accuracy(value: Any) -> str:
    """An accuracy in ``[0, 1]`` as ``81.2%``; ``—`` when missing."""
    return f"{100 * value:.1f}%" if isinstance(value, (int, float)) else MISSING


def score(value: Any, fmt: str = ".3f") -> str:
    """A number with ``fmt``; ``—`` when missing."""
    return format(value, fmt) if isinstance(value, (int, float)) else MISSING


def duration(seconds: float | None) -> str:
    """``42.1 s``, ``3m 12s``, ``1h 02m``; ``—`` for None."""
    if seconds is None or not math.isfinite(seconds):
        return MISSING
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"


def points_gap(value: Any, reference: Any) -> str:
    """``value - reference`` in percentage points, e.g. ``+3.1 pts``."""
    if not isinstance(value, (int, float)) or not isinstance(reference, (int, float)):
        return MISSING
    gap = 100 * (value - reference)
    return f"{gap:+.1f} pts"
