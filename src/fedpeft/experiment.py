"""Building an experiment from a config: backbone, data, partition, clients."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from fedpeft.config import ConfigError, RunConfig
from fedpeft.data import (
    CORPORA,
    PARTITIONERS,
    Corpus,
    load_corpus,
    partition_indices,
    split_train_val,
)
from fedpeft.seeding import stream, torch_generator
from fedpeft.models import Backbone, load_backbone
from fedpeft.models.backbone import resolve_backbone_path
from fedpeft.models.device import resolve_device
from fedpeft.models.embed import embed_dataset
from fedpeft.models.tokenized import TokenizedDataset, tokenize
from fedpeft.peft import PEFT_METHODS, AdapterClassifier, build_adapter
from fedpeft.registry import Registry
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
    """

    config: RunConfig
    backbone: Backbone
    corpus: Corpus
    train: TokenizedDataset
    test: TokenizedDataset
    partition: list[np.ndarray]
    clients: list[ClientData]

    @property
    def num_classes(self) -> int:
        return self.corpus.train.num_classes

    def new_adapter(
        self, method: str | None = None, **overrides: Any
    ) -> AdapterClassifier:
        """A fresh adapter of the configured method, seeded by the init stream.

        Args:
            method: Another registered method than the configured one.
            **overrides: Method options that replace the config's (e.g. a
                per-client ``rank`` chosen by device allocation).
        """
        peft = self.config.peft
        generator = torch_generator(stream(self.config.seed, "init"))
        options: dict[str, Any] = {
            "prompt_length": peft.prompt_length,
            "prompt_init": peft.prompt_init,
            "label_names": self.corpus.label_names,
            "rank": peft.rank,
            "alpha": peft.alpha,
            "rank_scaling": peft.rank_scaling,
            "target_modules": peft.target_modules,
            "layers": peft.layers,
            "prefix_length": peft.prefix_length,
            "prefix_init": peft.prefix_init,
            "projection": peft.prefix_projection,
            "projection_dim": peft.projection_dim,
        }
        return build_adapter(
            method or peft.method,
            self.backbone,
            self.num_classes,
            generator,
            **{**options, **overrides},
        )


def check_names(cfg: RunConfig) -> None:
    """Fail fast, before loading anything, on a name no registry knows (or a
    device this machine does not have).

    Raises:
        ConfigError: naming the key, the bad name and the choices.
    """
    checks: list[tuple[str, str, Registry[Any]]] = [
        ("peft.method", cfg.peft.method, PEFT_METHODS),
        ("strategy.name", cfg.strategy.name, STRATEGIES),
        ("partition.method", cfg.partition.method, PARTITIONERS),
    ]
    for key, name, registry in checks:
        if name not in registry:
            raise ConfigError(f"{key}: {registry.unknown_message(name)}")
    corpus = cfg.data.corpus
    if corpus.split(":", 1)[0] not in ("csv", "jsonl") and corpus not in CORPORA:
        raise ConfigError(
            f"data.corpus: {CORPORA.unknown_message(corpus)} (or csv:PATH / jsonl:PATH)"
        )
    try:
        resolve_backbone_path(cfg.model.backbone)
    except (KeyError, FileNotFoundError) as err:
        raise ConfigError(f"model.backbone: {err.args[0]}") from None
    try:
        resolve_device(cfg.model.device)
    except ValueError as err:
        raise ConfigError(str(err)) from None


def build_experiment(cfg: RunConfig) -> Experiment:
    """Load the backbone and corpus, partition the training pool, tokenize."""
    check_names(cfg)
    d = cfg.data
    corpus = load_corpus(
        d.corpus,
        text_column=d.text_column,
        label_column=d.label_column,
        test_fraction=d.test_fraction,
        split_seed=d.split_seed,
        max_train=d.max_train,
        max_test=d.max_test,
        max_chars=d.max_chars,
    )
    backbone = load_backbone(cfg.model.backbone, resolve_device(cfg.model.device))
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


def _partition(
    cfg: RunConfig, corpus: Corpus, backbone: Backbone, pool: TokenizedDataset
) -> list[np.ndarray]:
    p = cfg.partition
    groups = features = None
    if p.method == "feature":
        if p.group_column is not None:
            if p.group_column not in corpus.train.metadata:
                raise ConfigError(
                    f"partition.group_column = {p.group_column!r}: "
                    f"corpus {corpus.name!r} "
                    f"has metadata columns {sorted(corpus.train.metadata)}"
                )
            groups = np.asarray(corpus.train.metadata[p.group_column])
        else:
            features = embed_dataset(
                backbone, pool, precision=cfg.model.eval_precision
            ).numpy()
    seed = int(stream(cfg.seed, "partition").integers(0, 2**31 - 1))
    return partition_indices(
        corpus.train.labels,
        cfg.federation.num_clients,
        p.method,
        seed=seed,
        min_size=p.min_size,
        alpha=p.alpha,
        classes_per_client=p.classes_per_client,
        quantity_distribution=p.quantity_distribution,
        quantity_exponent=p.quantity_exponent,
        quantity_sigma=p.quantity_sigma,
        groups=groups,
        features=features,
        num_clusters=p.num_clusters,
    )
