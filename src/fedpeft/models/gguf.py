"""Dequantize a GGUF checkpoint once into a cached Hugging Face model directory.

Some shipped models come only as quantized GGUF files (llama.cpp's format).
transformers can read them (``from_pretrained(dir, gguf_file=...)``), but that
unpacks every tensor on each load (about 20 s for SmolLM2-135M here) and needs
the ``gguf`` package. :func:`dequantize_to_cache` does it once and saves a plain
float32 safetensors directory (model and tokenizer), which later loads with an
ordinary ``from_pretrained(path)`` and without ``gguf``.

The cache lives under ``$FEDPEFT_CACHE/models/<name>`` (default
``~/.cache/fedpeft/models/<name>``). A directory is written under a temporary
name next to its final place and renamed when complete, so an interrupted run
never leaves a half-written model where a later run would load it.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

CACHE_ENV = "FEDPEFT_CACHE"
"""Environment variable naming the fedpeft cache root (default ~/.cache/fedpeft)."""

GGUF_REQUIREMENT = "gguf==0.19.0"
MARKER = "fedpeft-gguf.json"
"""File written last into a finished cache directory; it records the source."""


def cache_root() -> Path:
    """The fedpeft cache root: ``$FEDPEFT_CACHE`` or ``~/.cache/fedpeft``."""
    configured = os.environ.get(CACHE_ENV)
    root = Path(configured) if configured else Path("~/.cache/fedpeft")
    return root.expanduser()


def model_cache_dir(name: str) -> Path:
    """Where the dense copy of model ``name`` is cached."""
    if not name or "/" in name or name.startswith("."):
        raise ValueError(f"model cache name {name!r} must be a plain directory name")
    return cache_root() / "models" / name


def is_cached(directory: Path) -> bool:
    """Whether ``directory`` holds a finished dense copy (its marker file exists)."""
    return (directory / MARKER).is_file() and (directory / "config.json").is_file()


def _require_packages() -> None:
    """Fail early, naming the install command, if a GGUF reader is missing."""
    needed = (("gguf", GGUF_REQUIREMENT), ("accelerate", "accelerate"))
    for module, requirement in needed:
        if importlib.util.find_spec(module) is None:
            raise ModuleNotFoundError(
                f"reading a GGUF checkpoint needs the {module!r} package; install "
                f"it with `pip install {requirement}` (only needed once: the "
                "dequantized copy is cached)"
            )


def _load_dense(gguf_file: Path) -> tuple[Any, Any]:
    """Model (float32, every weight unpacked) and tokenizer from one GGUF file."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    directory, file = gguf_file.parent, gguf_file.name
    tokenizer = AutoTokenizer.from_pretrained(directory, gguf_file=file)
    model: Any = AutoModelForCausalLM.from_pretrained(
        directory,
        gguf_file=file,
        dtype=torch.float32,
        quantization_config=GgufConfig(gguf_file=file, dequantize=True),
    )
    kinds = {type(m).__name__ for m in model.modules()}
    packed = sorted(k for k in kinds if "gguf" in k.lower())
    if packed:
        raise RuntimeError(
            f"{gguf_file.name}: transformers kept packed GGUF modules {packed}; "
            "they cannot be saved as a dense checkpoint"
        )
    # The weights are plain tensors now; drop the GGUF quantizer so that
    # save_pretrained writes (and later loads) an ordinary checkpoint.
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer.remove_quantization_config(model)
    model.config._name_or_path = ""
    # GGUF files carry no tokenizer length limit; use the model's context size.
    tokenizer.model_max_length = int(model.config.max_position_embeddings)
    return model, tokenizer


def _publish(staging: Path, target: Path) -> None:
    """Rename the finished ``staging`` directory to ``target`` (atomic).

    Raises:
        FileExistsError: if ``target`` exists but is no finished cache (it is
            never deleted here: it may not be ours).
    """
    try:
        staging.rename(target)
    except OSError:
        if is_cached(target):  # another process finished first; keep theirs
            logger.info("%s was cached concurrently; using that copy", target)
            return
        if target.exists():
            raise FileExistsError(
                f"{target} exists but is not a finished fedpeft cache (no {MARKER}); "
                "delete it and run again"
            ) from None
        raise


def dequantize_to_cache(gguf_file: Path, target: Path) -> Path:
    """Dequantize ``gguf_file`` into a plain Hugging Face directory at ``target``.

    Does nothing when ``target`` already holds a finished copy. Otherwise loads
    the file with transformers (every quantized block unpacked to float32),
    saves model and tokenizer with ``save_pretrained`` into a temporary sibling
    directory, writes the marker file and renames the directory into place.

    Args:
        gguf_file: A ``.gguf`` checkpoint of an architecture transformers reads.
        target: The cache directory to create (see :func:`model_cache_dir`).

    Returns:
        ``target``, loadable with ``from_pretrained(target)``.

    Raises:
        FileNotFoundError: if ``gguf_file`` does not exist.
        ModuleNotFoundError: if ``gguf`` or ``accelerate`` is not installed.
        FileExistsError: if ``target`` exists but is not a finished copy.
    """
    if is_cached(target):
        logger.debug("using cached dense copy %s", target)
        return target
    if not gguf_file.is_file():
        raise FileNotFoundError(f"GGUF checkpoint {gguf_file} does not exist")
    _require_packages()
    logger.info("dequantizing %s into %s (once; later loads use it)", gguf_file, target)
    start = time.perf_counter()
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        model, tokenizer = _load_dense(gguf_file)
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        seconds = time.perf_counter() - start
        _write_marker(staging, gguf_file, seconds)
        _publish(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # gone already on success
    logger.info(
        "cached %s (%s, %d parameters) in %.1f s",
        target,
        type(model).__name__,
        sum(p.numel() for p in model.parameters()),
        time.perf_counter() - start,
    )
    return target


def _write_marker(directory: Path, gguf_file: Path, seconds: float) -> None:
    """Record where the copy came from (written last: it marks completion)."""
    record = {
        "source": str(gguf_file.resolve()),
        "source_bytes": gguf_file.stat().st_size,
        "transformers": importlib.metadata.version("transformers"),
        "gguf": importlib.metadata.version("gguf"),
        "seconds": round(seconds, 2),
    }
    (directory / MARKER).write_text(json.dumps(record, indent=2) + "\n")
