"""Building an experiment from a config: backbone, data, partition, clients."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fedpeft.client.feature_cache import FeatureCache
from fedpeft.config import ConfigError, RunConfig
from fedpeft.data import CORPORA, Corpus, load_corpus, split_train_val
from fedpeft.data.images import (
    IMAGE_SOURCES,
    ImageCorpus,
    cap_images,
    is_image_source,
    load_images,
)
from fedpeft.data.partition import PartitionInputs, partition_indices
from fedpeft.metrics import group_metrics
from fedpeft.models import Backbone, load_backbone
from fedpeft.models.device import resolve_device
from fedpeft.models.embed import embed_dataset
from fedpeft.models.loading import is_vision_backbone, resolve_backbone_path
from fedpeft.models.tokenized import TokenizedDataset, tokenize
from fedpeft.models.vision import image_tensors
from fedpeft.peft import AdapterClassifier, PeftConfig, build_adapter, peft_config
from fedpeft.registry import Registry
from fedpeft.seeding import stream, torch_generator
from fedpeft.strategies import STRATEGIES

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClientData:
    """One client's shard, split into train and validation."""

    train: TokenizedDataset
    val: TokenizedDataset


@dataclass(frozen=True, eq=False)
class Experiment:
    """Everything a run needs, built once: the shared backbone and tokenized data.

    Attributes:
        partition: Per client, indices into ``corpus.train``.
        clients: Per client, its tokenized train/validation split.
        train: The whole training pool (the union of the clients' train splits),
            for centralized baselines.
        features: Pooled features computed under an adapter body, shared by
            the run's warm start and the baselines (a copy made with
            ``dataclasses.replace`` starts an empty one).
    """

    config: RunConfig
    backbone: Backbone
    corpus: Corpus | ImageCorpus
    train: TokenizedDataset
    test: TokenizedDataset
    partition: list[np.ndarray]
    clients: list[ClientData]
    features: FeatureCache = field(default_factory=FeatureCache, init=False)

    @property
    def num_classes(self) -> int:
        return self.corpus.train.num_classes

    def group_scores(
        self, predictions: np.ndarray | None, prefix: str = "test_"
    ) -> dict[str, Any]:
        """Test accuracy per group of each ``federation.eval_groups`` column
        and the worst group (:func:`fedpeft.metrics.group_metrics`), for
        predictions on :attr:`test`; empty without columns or predictions."""
        columns = self.config.federation.eval_groups
        if not columns or predictions is None:
            return {}
        scores = group_metrics(
            self.test.labels, predictions, self.corpus.test.metadata, columns
        )
        return {prefix + k: v for k, v in scores.items()}

    def new_adapter(
        self, peft: PeftConfig | str | None = None, **options: Any
    ) -> AdapterClassifier:
        """A fresh adapter, seeded by the init stream.

        Args:
            peft: The method's options (default: the config's ``peft``), e.g.
                ``cfg.peft.replace(rank=4, layers=2)`` for a per-client LoRA
                size, or a registered method's name (its default options).
            **options: Options that replace ``peft``'s, validated.

        Raises:
            ConfigError: for an unknown method or a bad or foreign option.
        """
        if peft is None:
            peft = self.config.peft
        elif isinstance(peft, str):
            peft = (
                self.config.peft
                if peft == self.config.peft.method
                else peft_config(peft, head_init=self.config.peft.head_init)
            )
        return build_adapter(
            peft,
            self.backbone,
            self.num_classes,
            torch_generator(stream(self.config.seed, "init")),
            self.corpus.label_names,
            **options,
        )


RECORD_DP_REFUSED = {
    "full": "full fine-tuning has no per-example forward (it would need a copy "
    "of every weight per example)",
    "blackbox": "black-box clients search without gradients (CMA-ES)",
}
"""Methods record-level DP-SGD cannot run, and why (every other method has a
per-example forward)."""
VISION_METHODS = ("visual-prompt", "bitfit", "lora", "head", "full")
"""The PEFT methods a vision backbone has."""


def check_names(cfg: RunConfig) -> None:
    """Fail fast, before loading anything, on a name no registry knows (or a
    device this machine does not have).

    Raises:
        ConfigError: naming the key, the bad name and the choices.
    """
    # peft.method and partition.method were resolved when the config was read.
    checks: list[tuple[str, str, Registry[Any]]] = [
        ("strategy.name", cfg.strategy.name, STRATEGIES),
    ]
    for key, name, registry in checks:
        if name not in registry:
            raise ConfigError(f"{key}: {registry.unknown_message(name)}")
    corpus = cfg.data.corpus
    images = is_image_source(corpus)
    generic = corpus.split(":", 1)[0] in ("csv", "jsonl")
    if not images and not generic and corpus not in CORPORA:
        raise ConfigError(
            f"data.corpus: {CORPORA.unknown_message(corpus)} (or csv:PATH / "
            f"jsonl:PATH; images: {', '.join(IMAGE_SOURCES)})"
        )
    vision = is_vision_backbone(cfg.model.backbone)
    if vision and cfg.peft.method not in VISION_METHODS:
        raise ConfigError(
            f"peft.method = {cfg.peft.method!r} works on text backbones only; with "
            f"model.backbone = {cfg.model.backbone!r} use one of {VISION_METHODS}"
        )
    if cfg.privacy.record_dp is not None and cfg.peft.method in RECORD_DP_REFUSED:
        raise ConfigError(
            f"privacy.record_dp (DP-SGD: each example's gradient clipped) does not "
            f"apply to peft.method = {cfg.peft.method!r}: "
            f"{RECORD_DP_REFUSED[cfg.peft.method]}; use another method, or "
            "privacy.client_dp (client-level DP)"
        )
    if not vision and cfg.peft.method == "visual-prompt":
        raise ConfigError(
            "peft.method = 'visual-prompt' needs a vision backbone "
            "(model.backbone = 'efficientnet-lite0'); for text use 'prompt'"
        )
    if images != vision:
        raise ConfigError(
            f"data.corpus = {corpus!r} is {'images' if images else 'text'} but "
            f"model.backbone = {cfg.model.backbone!r} is a "
            f"{'vision' if vision else 'text'} model: use "
            + (
                "model.backbone = 'efficientnet-lite0'"
                if images
                else "a text corpus, or images (" + ", ".join(IMAGE_SOURCES) + ")"
            )
        )
    try:
        resolve_backbone_path(cfg.model.backbone)
    except (KeyError, FileNotFoundError) as err:
        raise ConfigError(f"model.backbone: {err.args[0]}") from None
    try:
        resolve_device(cfg.model.device)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    from fedpeft.fedsp.recipe import check_recipe  # imports torch

    check_recipe(cfg)


def build_experiment(cfg: RunConfig) -> Experiment:
    """Load the backbone and corpus, partition the training pool, tokenize."""
    check_names(cfg)
    corpus = _load_corpus(cfg)
    missing = [c for c in cfg.federation.eval_groups if c not in corpus.test.metadata]
    if missing:
        raise ConfigError(
            f"federation.eval_groups: {missing} are not metadata columns of "
            f"{corpus.name}; its columns are {sorted(corpus.test.metadata)}"
        )
    backbone = load_backbone(
        cfg.model.backbone, resolve_device(cfg.model.device), cfg.model.image_size
    )
    if isinstance(corpus, ImageCorpus):
        pool: TokenizedDataset = image_tensors(corpus.train.images, corpus.train.labels)
        test: TokenizedDataset = image_tensors(corpus.test.images, corpus.test.labels)
    else:
        pool = tokenize(
            backbone, corpus.train.texts, corpus.train.labels, cfg.model.max_length
        )
        test = tokenize(
            backbone, corpus.test.texts, corpus.test.labels, cfg.model.max_length
        )
    partition = _partition(cfg, corpus, backbone, pool)
    clients: list[ClientData] = []
    train_parts: list[np.ndarray] = []
    for k, shard in enumerate(partition):
        tr, va = split_train_val(
            shard, cfg.partition.val_fraction, stream(cfg.seed, "split", k)
        )
        clients.append(ClientData(pool.subset(tr), pool.subset(va)))
        train_parts.append(tr)
    logger.info(
        "%s: %d train / %d test examples over %d clients",
        corpus.name,
        len(pool),
        len(test),
        len(clients),
    )
    return Experiment(
        cfg,
        backbone,
        corpus,
        pool.subset(np.concatenate(train_parts)),
        test,
        partition,
        clients,
    )


def _load_corpus(cfg: RunConfig) -> Corpus | ImageCorpus:
    """The text corpus or the images ``data.corpus`` names, split and capped."""
    d = cfg.data
    if not is_image_source(d.corpus):
        return load_corpus(
            d.corpus,
            text_column=d.text_column,
            label_column=d.label_column,
            test_fraction=d.test_fraction,
            split_seed=d.split_seed,
            max_train=d.max_train,
            max_test=d.max_test,
            max_chars=d.max_chars,
            encoding=d.encoding,
            drop_duplicates=d.drop_duplicates,
        )
    try:
        images = load_images(
            d.corpus,
            test_fraction=d.test_fraction,
            split_seed=d.split_seed,
            size=cfg.model.image_size,
        )
    except (FileNotFoundError, ValueError) as err:
        raise ConfigError(f"data.corpus: {err}") from None
    return ImageCorpus(
        images.name,
        cap_images(images.train, d.max_train, np.random.default_rng([d.split_seed, 1])),
        cap_images(images.test, d.max_test, np.random.default_rng([d.split_seed, 2])),
    )


def _partition(
    cfg: RunConfig,
    corpus: Corpus | ImageCorpus,
    backbone: Backbone,
    pool: TokenizedDataset,
) -> list[np.ndarray]:
    def features() -> np.ndarray:
        return embed_dataset(backbone, pool, precision=cfg.model.eval_precision).numpy()

    seed = int(stream(cfg.seed, "partition").integers(0, 2**31 - 1))
    return partition_indices(
        corpus.train.labels,
        cfg.federation.num_clients,
        cfg.partition,
        seed=seed,
        inputs=PartitionInputs(corpus.train.metadata, features),
    )
