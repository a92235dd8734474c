"""The host settings: glibc keeps freed blocks, so a step's tensors stop faulting."""

from __future__ import annotations

import ctypes
import platform

import pytest
import torch

from fedpeft.config import load_config
from fedpeft.engine.host import configure_host, retain_freed_memory

glibc = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
    reason="mallopt thresholds are glibc's",
)


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


def _mallinfo() -> _MallInfo2:
    fn = ctypes.CDLL(None).mallinfo2
    fn.restype = _MallInfo2
    info: _MallInfo2 = fn()
    return info


@glibc
def test_a_freed_step_sized_block_stays_in_the_process() -> None:
    """64 MiB (glibc would mmap it and unmap it on free) comes from the heap
    and stays there, free for the next step, instead of going back to the
    kernel to be faulted in again."""
    assert retain_freed_memory()
    block = 64 << 20
    before = _mallinfo()
    tensor = torch.empty(block, dtype=torch.uint8).fill_(1)
    held = _mallinfo()
    assert held.hblkhd == before.hblkhd  # not an mmapped block
    del tensor
    after = _mallinfo()
    assert after.fordblks >= block  # kept, free, in the heap
    assert after.arena >= held.arena - 1024  # the heap was not trimmed


def test_configure_host_sets_the_thread_count() -> None:
    threads = torch.get_num_threads()
    try:
        configure_host(load_config(None, ["threads=1", "retain_freed_memory=false"]))
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(threads)
