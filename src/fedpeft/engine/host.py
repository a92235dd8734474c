"""Process-wide settings of the host a run computes on: threads and glibc's
allocator.

A training step allocates and frees the same few-megabyte tensors every
time (a layer's activations, their gradients, attention scores). glibc
serves a block that size with ``mmap`` and gives it back on ``free`` (or
trims it off the heap's top), so the next step's block is fresh memory that
the kernel faults in and zeroes page by page: on the main job 2,600–4,100
page faults and 3.5–7.6 ms of system time per training step of 16. Fixing
the mmap threshold at 256 MiB and the trim threshold at 1 GiB keeps freed
blocks in the process for reuse: the main job ran 1.03–1.05× faster end to
end (docs/benchmarks.md, "The main job by phase"), its peak memory the same
within noise. Results do not change: only where memory comes from does.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import platform

import torch

from fedpeft.config import RunConfig

logger = logging.getLogger(__name__)

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 256 << 20
TRIM_THRESHOLD_BYTES = 1 << 30


def configure_host(cfg: RunConfig) -> None:
    """Apply ``threads`` and ``retain_freed_memory`` to this process."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if cfg.retain_freed_memory:
        retain_freed_memory()


@functools.cache
def retain_freed_memory() -> bool:
    """Make glibc keep freed blocks below 256 MiB for reuse (once per
    process); returns whether it took effect (False off glibc)."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (AttributeError, OSError):
        return False
    ok = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and bool(
        mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES)
    )
    if not ok:
        logger.debug("mallopt refused the thresholds; glibc's defaults stay")
    return ok
