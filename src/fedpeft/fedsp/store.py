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

from torch import nn

from fedpeft.fedsp.auxiliary import LayerPlan, layer_list, tie_positions, unique_tensors
from fedpeft.models.backbone import Backbone

logger = logging.getLogger(__name__)

PLAN_KEY = "fedpeft_auxiliary"
MARKER = "fedpeft-auxiliary.json"
"""Written last into a finished directory: the recipe, data and distillation log."""
WEIGHTS = "model.safetensors"


def is_auxiliary(directory: Path) -> bool:
    """Whether ``directory`` holds a finished auxiliary model."""
    return (directory / MARKER).is_file() and (directory / WEIGHTS).is_file()


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
    """Load a saved auxiliary model (frozen, eval mode) without the full model.

    Raises:
        ValueError: if the directory is not a finished auxiliary model, or its
            weights do not fit its plan (a corrupt or foreign file).
    """
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoTokenizer

    from fedpeft.models.attention import use_fast_attention

    if not is_auxiliary(directory):
        raise ValueError(
            f"{directory} is not a finished auxiliary model (no {MARKER} or "
            f"{WEIGHTS}); build it again with fedpeft's fedsp section"
        )
    config = AutoConfig.from_pretrained(directory, local_files_only=True)
    plan = LayerPlan.from_dict(getattr(config, PLAN_KEY))
    decoder = any(a.endswith("ForCausalLM") for a in (config.architectures or []))
    loader = AutoModelForCausalLM if decoder else AutoModel
    model = loader.from_config(config)  # type: ignore[no-untyped-call]
    layers = layer_list(model)
    path = next(n for n, m in model.named_modules() if m is layers)
    parent, _, attr = path.rpartition(".")
    setattr(model.get_submodule(parent), attr, tie_positions(layers, plan))
    try:
        tensors = load_file(str(directory / WEIGHTS))
    except Exception as err:  # safetensors raises its own error types
        raise ValueError(f"{directory / WEIGHTS} is unreadable ({err})") from None
    _load_unique(model, tensors, directory)
    model.eval()
    model.requires_grad_(False)
    use_fast_attention(model)
    tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    return Backbone(
        name=name or str(directory),
        model=model,
        tokenizer=tokenizer,
        kind="decoder" if decoder else "encoder",
    )


def _load_unique(model: nn.Module, tensors: dict[str, Any], where: Path) -> None:
    """Copy ``tensors`` into the model's unique tensors, requiring an exact fit."""
    expected = dict(unique_tensors(model))
    missing = sorted(set(expected) - set(tensors))
    extra = sorted(set(tensors) - set(expected))
    if missing or extra:
        raise ValueError(
            f"{where / WEIGHTS} does not fit its plan: missing {missing[:3]}, "
            f"unexpected {extra[:3]}; the file is corrupt or from another model"
        )
    for name, target in expected.items():
        value = tensors[name]
        if tuple(value.shape) != tuple(target.shape):
            raise ValueError(
                f"{where / WEIGHTS}: {name} has shape {tuple(value.shape)}, the plan "
                f"needs {tuple(target.shape)}"
            )
        target.data.copy_(value)


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
        if not is_auxiliary(directory):
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
