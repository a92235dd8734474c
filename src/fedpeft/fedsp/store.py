"""The auxiliary model on disk: what the server ships to clients, and its cache.

A saved auxiliary model is a Hugging Face model directory (``config.json``
with the :class:`~fedpeft.fedsp.auxiliary.LayerPlan` under
``fedpeft_auxiliary``, tokenizer files) plus ``model.safetensors`` holding
each tensor once: positions that share weights are re-tied on load. It loads
without the full model (``model.backbone = <that directory>`` works on a
client), and its file size is what shipping it costs.

Directories are written under a temporary name and renamed when complete;
building one takes a lock, so two processes never build the same one at once
and an interrupted build never leaves a directory a later run would load.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from fedpeft.models.backbone import Backbone
from fedpeft.models.layer_plan import unique_tensors
from fedpeft.models.loading import load_tied_backbone
from fedpeft.models.tied import MARKER, WEIGHTS, is_tied_directory

logger = logging.getLogger(__name__)


def save_auxiliary(aux: Backbone, directory: Path, meta: dict[str, Any]) -> Path:
    """Write ``aux`` to ``directory`` atomically (refusing to replace one).

    Raises:
        FileExistsError: if ``directory`` exists.
    """
    from safetensors.torch import save_file

    if directory.exists():
        raise FileExistsError(f"{directory} exists; remove it or choose another")
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        aux.model.config.save_pretrained(tmp)
        aux.tokenizer.save_pretrained(tmp)
        tensors = {n: t.detach().contiguous() for n, t in unique_tensors(aux.model)}
        save_file(tensors, str(tmp / WEIGHTS), metadata={"format": "pt"})
        (tmp / MARKER).write_text(json.dumps(meta, indent=1, sort_keys=True))
        os.replace(tmp, directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return directory


def load_auxiliary(directory: Path, name: str | None = None) -> Backbone:
    """Load a saved auxiliary model (frozen, eval mode) without the full model,
    as :func:`~fedpeft.models.loading.load_backbone` does for its directory.

    Raises:
        ValueError: if it is unfinished, corrupt or foreign.
    """
    return load_tied_backbone(directory, name)


@contextlib.contextmanager
def build_lock(directory: Path) -> Iterator[None]:
    """An exclusive lock on building ``directory`` (held across processes)."""
    directory.parent.mkdir(parents=True, exist_ok=True)
    with open(directory.parent / f".{directory.name}.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def cached_auxiliary(
    directory: Path, build: Callable[[], tuple[Backbone, dict[str, Any]]]
) -> Backbone:
    """The auxiliary model at ``directory``, built (and saved) first if absent.

    Args:
        build: Returns the model and the metadata to record with it.
    """
    with build_lock(directory):
        if not is_tied_directory(directory):
            if directory.exists():  # an unfinished or foreign directory: keep it
                raise FileExistsError(
                    f"{directory} exists but holds no finished auxiliary model; "
                    "move it away and run again"
                )
            aux, meta = build()
            save_auxiliary(aux, directory, meta)
            logger.info("saved the auxiliary model to %s", directory)
        else:
            logger.info("using the cached auxiliary model %s", directory)
    return load_auxiliary(directory)


def read_meta(directory: Path) -> dict[str, Any]:
    """The recipe, data and distillation log saved with an auxiliary model."""
    meta: dict[str, Any] = json.loads((directory / MARKER).read_text())
    return meta
