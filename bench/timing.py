"""Timing shared by the benchmarks: variants interleaved, medians kept."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping


def interleaved_medians(
    fns: Mapping[str, Callable[[], object]], repeats: int
) -> dict[str, float]:
    """Median seconds of each function over ``repeats`` rounds.

    Each round runs every function once, in turn, so machine drift hits all
    of them alike; a first round warms up and is not counted.
    """
    times: dict[str, list[float]] = {name: [] for name in fns}
    for rnd in range(repeats + 1):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            if rnd:
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}
