"""The server's side of FedSP before round 1: build the auxiliary model of a
run's backbone from the ``[fedsp]`` recipe, distill it on server-side text,
and cache it by everything that determines it."""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from fedpeft.config import ConfigError, RunConfig
from fedpeft.fedsp.auxiliary import LayerPlan, build_auxiliary, layer_plan, model_size
from fedpeft.fedsp.config import FedSPSection
from fedpeft.fedsp.distill import DistillSettings, distill
from fedpeft.fedsp.store import cached_auxiliary, read_meta
from fedpeft.models.backbone import Backbone
from fedpeft.models.gguf import cache_root
from fedpeft.models.tied import WEIGHTS
from fedpeft.models.tokenized import TokenizedDataset, tokenize
from fedpeft.seeding import stream

logger = logging.getLogger(__name__)

RECIPE_VERSION = 1
"""Bumped whenever building or distilling changes what a recipe produces."""
HELDOUT_TEXTS = 128
RECIPE_FIELDS = (
    "depth",
    "share",
    "source",
    "distill",
    "distill_corpus",
    "distill_texts",
    "distill_steps",
    "distill_lr",
    "distill_batch",
    "distill_seed",
    "logit_kd",
)
"""The ``[fedsp]`` keys that determine the auxiliary model (the first four
alone when it is not distilled); the protocol's keys do not."""


@dataclass(frozen=True)
class Auxiliary:
    """A run's auxiliary model, as the server built (or found) it.

    Attributes:
        backbone: The auxiliary model (loaded from its directory, as a client would).
        plan: Its layer plan against the full model.
        directory: Where it is saved; its weights file is what shipping costs.
        meta: The recipe, data, sizes and distillation log saved with it.
    """

    backbone: Backbone
    plan: LayerPlan
    directory: Path
    meta: dict[str, Any]

    @property
    def shipped_bytes(self) -> int:
        """Bytes a client downloads once: the weights file (fp32)."""
        return (self.directory / WEIGHTS).stat().st_size


def check_recipe(cfg: RunConfig) -> None:
    """Refuse FedSP settings that cannot work, before anything loads.

    Raises:
        ConfigError: naming the key and the fix.
    """
    section = cfg.fedsp
    if not section.enabled:
        return
    if cfg.peft.method not in ("prefix", "prompt"):
        raise ConfigError(
            f"fedsp.enabled with peft.method = {cfg.peft.method!r}: the auxiliary "
            "model carries prompts; use peft.method = 'prefix' (FedSP) or 'prompt'"
        )
    if section.distill_corpus == cfg.data.corpus:
        raise ConfigError(
            f"fedsp.distill_corpus = {section.distill_corpus!r} is the clients' "
            "corpus (data.corpus); the server distills on text it holds itself, "
            "e.g. fedsp.distill_corpus = '20newsgroups' or 'bbc-news'"
        )
    if section.server_steps and cfg.federation.num_clients < 2:
        raise ConfigError(
            "fedsp.server_steps gives the last client's shard to the server; "
            "it needs federation.num_clients >= 2"
        )
    if cfg.devices.profiles is not None:
        raise ConfigError(
            "fedsp.enabled runs one adapter layout; unset devices.profiles"
        )


def auxiliary_for(
    cfg: RunConfig,
    backbone: Backbone,
    on_step: Callable[[int, float], None] | None = None,
) -> Auxiliary:
    """The run's auxiliary model: from the cache, or built and distilled now.

    Args:
        cfg: The run config (its ``fedsp`` section, ``model.max_length``, seed).
        backbone: The full model (the teacher).
        on_step: Progress callback of the distillation, (step, loss).
    """
    section = cfg.fedsp
    plan = layer_plan(backbone.num_layers, section.depth, section.share, section.source)
    key = _recipe_key(cfg, backbone, plan)
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "-", Path(backbone.name).name)
    directory = cache_root() / "auxiliary" / f"{safe}-{digest[:16]}"

    def build() -> tuple[Backbone, dict[str, Any]]:
        aux = build_auxiliary(backbone, plan)
        meta: dict[str, Any] = {"recipe": key}
        if section.distill:
            length = cfg.model.max_length
            seed = section.distill_seed
            train, heldout = server_texts(section, backbone, length, seed)
            settings = _settings(section)
            rng = stream(seed, "distill")
            log = distill(backbone, aux, plan, train, settings, rng, heldout, on_step)
            meta.update(
                heldout_error_before=log.heldout_before,
                heldout_error_after=log.heldout_after,
                losses=log.losses,
            )
        full, small = model_size(backbone.model), model_size(aux.model)
        meta.update(full=asdict(full), auxiliary=asdict(small))
        return aux, meta

    aux = cached_auxiliary(directory, build)
    return Auxiliary(aux, plan, directory, read_meta(directory))


def server_texts(
    section: FedSPSection, backbone: Backbone, max_length: int, seed: int
) -> tuple[TokenizedDataset, TokenizedDataset]:
    """The server's unlabeled text, tokenized: ``distill_texts`` from the
    distillation corpus's training split, and a held-out slice of its test
    split to measure the hidden-state error on."""
    from fedpeft.data import load_corpus

    corpus = load_corpus(
        section.distill_corpus,
        max_train=section.distill_texts,
        max_test=HELDOUT_TEXTS,
        split_seed=seed,
    )
    train = tokenize(backbone, corpus.train.texts, corpus.train.labels, max_length)
    heldout = tokenize(backbone, corpus.test.texts, corpus.test.labels, max_length)
    logger.info(
        "distilling on %d texts of %s (%d held out)",
        len(train),
        section.distill_corpus,
        len(heldout),
    )
    return train, heldout


def _settings(section: FedSPSection) -> DistillSettings:
    return DistillSettings(
        steps=section.distill_steps,
        lr=section.distill_lr,
        batch_size=section.distill_batch,
        logit_kd=section.logit_kd,
    )


def _recipe_key(cfg: RunConfig, backbone: Backbone, plan: LayerPlan) -> dict[str, Any]:
    """Everything that determines the auxiliary model (the cache key)."""
    fields = RECIPE_FIELDS if cfg.fedsp.distill else RECIPE_FIELDS[:4]
    section = {k: getattr(cfg.fedsp, k) for k in fields}
    return {
        "version": RECIPE_VERSION,
        "backbone": backbone.name,
        "backbone_parameters": backbone.num_parameters,
        "plan": plan.as_dict(),
        "fedsp": section,
        "max_length": cfg.model.max_length,
    }
