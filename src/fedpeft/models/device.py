"""Where the backbone and adapters compute: the CPU or a CUDA GPU.

Everything that trains or evaluates follows the backbone: adapters are built on
its device, batches are moved there, and payloads come back to the host as
numpy arrays. Seeded generators stay on the CPU (draws are made there and
copied), so a run's random choices do not depend on the device.
"""

from __future__ import annotations

import platform
import re
from pathlib import Path

import torch

from fedpeft.config import DEVICE_PATTERN, DEVICES


def resolve_device(spec: str) -> torch.device:
    """The torch device for a ``model.device`` setting.

    Args:
        spec: ``"cpu"``, ``"cuda"``, ``"cuda:N"``, or ``"auto"`` (the first
            CUDA GPU when torch sees one, else the CPU).

    Raises:
        ValueError: for another spelling, or a GPU this torch cannot use, with
            what to set instead.
    """
    if re.fullmatch(DEVICE_PATTERN, spec) is None:
        raise ValueError(f"model.device={spec!r}: choose {DEVICES}")
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(spec)
    if device.type == "cpu":
        return device
    if not torch.cuda.is_available():
        build = "a CPU-only build" if torch.version.cuda is None else "a CUDA build"
        raise ValueError(
            f"model.device={spec!r}: torch {torch.__version__} ({build}) sees no "
            "CUDA GPU; set model.device='cpu' (or 'auto'), or install a CUDA build "
            "of torch on a machine with a GPU"
        )
    count = torch.cuda.device_count()
    if device.index is not None and device.index >= count:
        raise ValueError(
            f"model.device={spec!r}: this machine has {count} CUDA GPU(s), "
            f"cuda:0 .. cuda:{count - 1}"
        )
    # One spelling per GPU, so the backbone is loaded once for "cuda" and "cuda:0".
    index = device.index if device.index is not None else torch.cuda.current_device()
    return torch.device("cuda", index)


def describe_cpu() -> str:
    """The CPU's model name and vector capability, e.g. ``"AMD EPYC (AVX2)"``,
    for run records and benchmarks: the same code runs several times faster on
    one 2-core machine than another (docs/benchmarks.md, "Machines without
    bf16")."""
    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{name} ({torch.backends.cpu.get_cpu_capability()})"


def describe_device(device: torch.device) -> str:
    """``"cpu"``, or the GPU's index and name, for run records."""
    if device.type != "cuda":
        return device.type
    index = device.index if device.index is not None else torch.cuda.current_device()
    return f"cuda:{index} ({torch.cuda.get_device_name(index)})"
