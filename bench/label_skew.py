"""Label skew, multi-seed: which local loss / aggregation keeps federated prompt
tuning from collapsing (docs/benchmarks.md, "Label skew").

Every cell is one federated run (corpus, partition, α, algorithm, start, seed);
its round records are cached under ``--out/cells/`` as soon as it finishes, so
an interrupted grid resumes where it stopped. Per (corpus, seed) the references
are centralized prompt tuning (the same example budget as one federated run)
and the tuned linear probe, both on the pooled training data.

Subsampling (the whole grid must fit ~2 hours on 2 cores): 1,200 training /
300 test examples per corpus (60 per client, 10% of them held for validation),
64 tokens, 20 clients, 8 rounds of 4 clients (20%), 1 local epoch, bf16
backbone compute for training and evaluation, the test set evaluated every
round (clients' validation splits are not). The grid itself is subsampled:
every algorithm runs at Dir(0.1) with equal client sizes (the setting the
issue's criterion is about); the other partitions run FedAvg and the
recommended configuration (and Dynamic at α = 0.5).

Phases, in the order they run (``--phases`` picks some):

* ``algorithms``: Dir(0.1) at equal client sizes (``dirichlet-balanced``),
  every algorithm from the class-means warm start; FedAvg also from the probe
  warm start (the previous default); FedAvg and Dynamic from a cold start
  (random head).
* ``lda``: Dir(0.1), the recommended configuration from the class-means and
  the ``lda`` warm start (shrunk full covariance), and the latter with a frozen
  head (``LDA_CELLS``); run it into its own ``--out`` to compare within one
  code version.
* ``partitions``: FedAvg and the recommended configuration at α ∈ {0.5, 10}
  with ``dirichlet-balanced`` and at α ∈ {0.1, 0.5, 10} with the plain
  ``dirichlet`` (where it can build 20 clients of ≥ 10 examples; where it
  cannot, the reason is recorded); Dynamic as well at balanced Dir(0.5); FedAvg
  and Dynamic from a cold start at Dir(0.5) (``PARTITIONS``).

    python bench/label_skew.py [--phases algorithms partitions lda]
        [--corpora ...] [--seeds 0 1 2] [--out runs/label_skew] [--report-only]
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fedpeft.baselines.centralized import run_centralized
from fedpeft.baselines.probe import run_linear_probe
from fedpeft.config import load_config
from fedpeft.data.partition.base import PartitionError
from fedpeft.engine.simulation import FederatedRun
from fedpeft.experiment import Experiment, build_experiment
from fedpeft.remote.node import config_digest
from fedpeft.rundir.files import write_atomic

BASE = [
    "federation.num_clients=20",
    "federation.rounds=8",
    "strategy.fraction_fit=0.2",
    "data.max_train=1200",
    "data.max_test=300",
    "federation.eval_clients=false",
    "model.max_length=64",
    "model.precision=bf16",
    "partition.min_size=10",
    "baselines.run=[]",
]
PER_CORPUS = {"20newsgroups": ["data.max_chars=1200"]}
CORPORA = ("rotten-tomatoes", "20newsgroups", "tweets-sentiment")

CE = "client.loss=cross-entropy"
BS = "client.loss=balanced-softmax"
ALGORITHMS: dict[str, list[str]] = {
    "fedavg": [CE],
    "dynamic": [CE, "strategy.name=dynamic"],
    "balanced-softmax": [BS],
    "fedlc": ["client.loss=logit-calibrated"],
    "fedrs": ["client.loss=restricted-softmax"],
    "fedbabu": [CE, "client.head=frozen"],
    "fedavgm": [CE, "strategy.server_momentum=0.5"],
    "scaffold": [CE, "strategy.scaffold=true"],
    "balanced-softmax+dynamic": [BS, "strategy.name=dynamic"],
    "balanced-softmax+fedbabu": [BS, "client.head=frozen"],
    "balanced-softmax+fedavgm": [BS, "strategy.server_momentum=0.5"],
    "balanced-softmax+scaffold": [BS, "strategy.scaffold=true"],
}
"""Each algorithm of the label-skew issue alone, on top of FedAvg with plain
cross-entropy, and the server-side ones also with balanced softmax (library
defaults for their settings: FedLC τ = 1, FedRS α = 0.5, FedAvgM β = 0.5).
Every cell names its local loss: the library's default loss changed during the
grid (to balanced softmax), and a cell must not inherit it."""

RECOMMENDED = "balanced-softmax"
"""The recommended configuration (with the class-means warm start): the
algorithm with the best mean final accuracy over the ``algorithms`` phase's
cells (docs/benchmarks.md)."""

STARTS = {
    "class-means": ["peft.head_init=class-means"],
    "lda": ["peft.head_init=lda"],
    "probe": ["peft.head_init=probe"],
    "cold": ["peft.head_init=random"],
}


@dataclass(frozen=True)
class Cell:
    corpus: str
    partition: str
    alpha: float
    algorithm: str
    start: str
    seed: int

    @property
    def key(self) -> str:
        return (
            f"{self.corpus}/{self.partition}-a{self.alpha:g}/{self.algorithm}/"
            f"{self.start}/s{self.seed}"
        )

    def overrides(self) -> list[str]:
        algo = ALGORITHMS[self.algorithm]
        return [
            *BASE,
            f"data.corpus={self.corpus}",
            *PER_CORPUS.get(self.corpus, []),
            f"partition.method={self.partition}",
            f"partition.alpha={self.alpha}",
            *STARTS[self.start],
            *algo,
            f"seed={self.seed}",
        ]


PARTITIONS = [
    ("dirichlet-balanced", 0.5, ("fedavg", "dynamic", RECOMMENDED)),
    ("dirichlet-balanced", 10.0, ("fedavg", RECOMMENDED)),
    ("dirichlet", 0.1, ("fedavg", RECOMMENDED)),
    ("dirichlet", 0.5, ("fedavg", RECOMMENDED)),
    ("dirichlet", 10.0, ("fedavg", RECOMMENDED)),
]
"""The ``partitions`` phase's warm-start cells per (corpus, seed): Dir(0.1)
with equal sizes is the ``algorithms`` phase's; Dynamic only where label skew is
moderate (α = 0.5), where its weighting has room to differ from FedAvg's."""

PRIORITY = [
    ("fedavg", "class-means"),
    (RECOMMENDED, "class-means"),
    ("dynamic", "class-means"),
    ("fedavg", "cold"),
    ("dynamic", "cold"),
    ("fedavgm", "class-means"),
    ("scaffold", "class-means"),
    ("fedbabu", "class-means"),
    ("fedlc", "class-means"),
    ("fedrs", "class-means"),
    ("balanced-softmax+fedavgm", "class-means"),
    ("balanced-softmax+dynamic", "class-means"),
    ("balanced-softmax+scaffold", "class-means"),
    ("balanced-softmax+fedbabu", "class-means"),
    ("fedavg", "probe"),
]
"""The ``algorithms`` phase, in the order it runs: each (algorithm, start) on
every corpus and seed before the next, so a partial grid has whole rows."""


LDA_CELLS = [
    (RECOMMENDED, "class-means"),
    (RECOMMENDED, "lda"),
    ("balanced-softmax+fedbabu", "lda"),
]
"""The ``lda`` phase at Dir(0.1): the recommended configuration from the
class-means and the lda warm start, and with the lda head kept frozen
(FedBABU), in case local training spoils the better head."""


def cells(
    phases: Sequence[str], corpora: Sequence[str], seeds: Sequence[int]
) -> Iterator[Cell]:
    """The grid's cells, phase by phase (module docstring)."""
    strong = ("dirichlet-balanced", 0.1)
    for phase in phases:
        if phase == "algorithms":
            for algo, start in PRIORITY:
                for seed in seeds:
                    for corpus in corpora:
                        yield Cell(corpus, *strong, algo, start, seed)
        elif phase == "partitions":  # a corpus's seeds before the next corpus
            for corpus in corpora:
                for seed in seeds:
                    for partition, alpha, algos in PARTITIONS:
                        for algo in algos:
                            yield Cell(
                                corpus, partition, alpha, algo, "class-means", seed
                            )
                    for algo in ("fedavg", "dynamic"):
                        yield Cell(
                            corpus, "dirichlet-balanced", 0.5, algo, "cold", seed
                        )
        elif phase == "lda":  # the shrunk-covariance warm start against class-means
            for seed in seeds:
                for corpus in corpora:
                    for algo, start in LDA_CELLS:
                        yield Cell(corpus, *strong, algo, start, seed)
        else:
            raise SystemExit(
                f"unknown phase {phase!r}; use algorithms, partitions, lda"
            )


def run_cell(cell: Cell, out: Path) -> dict[str, Any]:
    path = out / "cells" / f"{cell.key.replace('/', '__')}.json"
    cfg = load_config(None, cell.overrides())
    digest = config_digest(cfg)
    if path.exists():
        cached = dict(json.loads(path.read_text()))
        if cached.get("config_digest") == digest:
            return cached
        print(f"{cell.key}: cached under another configuration; rerun", flush=True)
    started = time.perf_counter()
    try:
        exp = build_experiment(cfg)
    except PartitionError as err:
        result: dict[str, Any] = {"cell": cell.key, "error": str(err)}
    else:
        fed = FederatedRun(exp).run()
        result = {
            "cell": cell.key,
            "history": [
                {
                    k: r.get(k)
                    for k in (
                        "round",
                        "test_accuracy",
                        "test_macro_f1",
                        "bytes_up",
                        "bytes_down",
                        "client_flops_total",
                        "clients",
                    )
                }
                for r in fed.history
            ],
            "seconds": time.perf_counter() - started,
        }
    result["config_digest"] = digest
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps(result))
    acc = result.get("history", [{}])[-1].get("test_accuracy")
    print(
        f"{cell.key}: {'—' if acc is None else f'{acc:.4f}'} "
        f"({time.perf_counter() - started:.0f} s)",
        flush=True,
    )
    return result


def example_budget(exp: Experiment) -> int:
    """One federated run's training examples: rounds × clients a round × the
    mean client's training size (the centralized reference's budget)."""
    cfg = exp.config
    fed = cfg.federation
    per_round = max(2, math.ceil(cfg.strategy.fraction_fit * fed.num_clients))
    mean_n = float(np.mean([len(c.train) for c in exp.clients]))
    return round(fed.rounds * per_round * mean_n)


def run_reference(corpus: str, seed: int, out: Path) -> dict[str, Any]:
    """Centralized prompt tuning (linear-probe warm start, LP-FT) and the
    tuned linear probe on the pooled data of (corpus, seed)."""
    path = out / "references" / f"{corpus}__s{seed}.json"
    if path.exists():
        return dict(json.loads(path.read_text()))
    started = time.perf_counter()
    cell = Cell(corpus, "dirichlet-balanced", 0.1, "fedavg", "probe", seed)
    cfg = load_config(None, cell.overrides())
    exp = build_experiment(cfg)
    budget = example_budget(exp)
    result: dict[str, Any] = {"budget_examples": budget}
    curve = run_centralized(exp, budget, 1)  # evaluated once, at the end
    result["centralized"] = [r["test_accuracy"] for r in curve]
    result["linear_probe"] = run_linear_probe(exp)["test_accuracy"]
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps(result))
    print(
        f"reference {corpus} s{seed}: centralized {result['centralized'][-1]:.4f}, "
        "probe "
        f"{result['linear_probe']:.4f} ({time.perf_counter() - started:.0f} s)",
        flush=True,
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--phases", nargs="+", default=["algorithms", "partitions"])
    parser.add_argument("--corpora", nargs="+", default=list(CORPORA))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=Path("runs/label_skew"))
    parser.add_argument("--report-only", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    if not args.report_only:
        for cell in cells(args.phases, args.corpora, args.seeds):
            run_reference(cell.corpus, cell.seed, args.out)
            run_cell(cell, args.out)
    from label_skew_report import report  # bench/ sibling: tables from the cache

    report(args.out)


if __name__ == "__main__":
    main()
