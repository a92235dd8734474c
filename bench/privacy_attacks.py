"""Privacy attacks on what the federation reveals, without protection, under
secure aggregation and under client-level DP (docs/benchmarks.md, "Privacy
attacks").

Phases (``--phases``):

* ``labels``: label-distribution inference from round 1's updates. BBC News
  (5 topics), 1,000 training snippets over 20 clients (``dirichlet-balanced``,
  Dir(α)), the default soft prompt and loss, class-means warm start (round 0).
  The server calibrates the attack on 40 shadow clients it builds from its own
  labeled data (the test split) with Dir(α) label mixes, trained from the
  same global state by the same client code. It then infers each real
  client's histogram from what it sees:

  - no protection: the client's own update;
  - secure aggregation: only the round's sum (all 20 clients), so one
    inference for everyone;
  - client-level DP: the DP-FedAvg release (updates clipped to C = the
    round's median norm, Gaussian noise σC on the sum, σ calibrated to ε over
    5 rounds of all 20 clients at δ = 1e-5).

  Error: total-variation distance to each client's true histogram, against
  the attacker's prior (the global label distribution) and the cohort's
  true mixture (the best any sum-only attack can do).
* ``membership``: membership inference on the final adapter of Rotten
  Tomatoes runs (1,000 training / 1,000 non-member snippets, 10 clients,
  Dir(0.5), 6 rounds of 5, FedPrompt, zero head — the DP-compatible setup for
  every run, so only the protection differs): plain, secure aggregation, and
  DP-FedAvg (C = 0.1) at ε ∈ {1, 3, 8}, δ = 1e-5 (δ below 1/N is impossible
  at N = 10; the ε values are what the issue asks). Attacks: loss threshold
  and online LiRA with 8 shadow adapters, each trained centrally on a random
  half of members ∪ non-members (each example in exactly half of them) with
  the federated run's example budget.

* ``inversion``: gradient inversion of a soft-prompt update
  (:mod:`fedpeft.privacy.attacks.inversion`): Rotten Tomatoes test snippets
  that fill all 16 positions ([CLS] and [SEP] known to the attacker and
  excluded from scoring), the initial prompt and head; the continuous
  relaxation then ``--sweeps`` rounds of the discrete token search. The
  views are one client's gradient of B = 1, 2, 4 examples (an SGD step; for
  B = 1 the label is read from the bias gradient), its first AdamW step, the
  secure sum of 10 one-example clients, and that sum clipped (to the median
  client norm) and noised as DP-FedAvg at ε ∈ {1, 3, 8} (10 clients a round,
  6 rounds). Token F1 (bag of tokens) against random tokens.

    python bench/privacy_attacks.py [--phases labels membership inversion]
        [--seeds 0 1 2] [--trials 6] [--iters 200] [--sweeps 8]
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from results_io import merge_results

from fedpeft.aggregation import global_norm, weighted_mean
from fedpeft.client import train_adapter
from fedpeft.client.evaluate import concat_datasets, predict_logits
from fedpeft.config import load_config
from fedpeft.engine.simulation import FederatedRun
from fedpeft.experiment import build_experiment
from fedpeft.models.tokenized import TokenizedDataset
from fedpeft.privacy import calibrate_noise_multiplier, dp_mean
from fedpeft.privacy.attacks.labels import (
    LabelInference,
    label_histogram,
    total_variation,
)
from fedpeft.privacy.attacks.membership import (
    confidence,
    lira_scores,
    loss_scores,
    roc_auc,
    tpr_at_fpr,
)
from fedpeft.seeding import stream

EPSILONS = (1.0, 3.0, 8.0)
DELTA = 1e-5

LABELS_BASE = [
    "data.corpus=bbc-news",
    "data.max_train=1000",
    "data.max_test=500",
    "data.max_chars=600",
    "federation.num_clients=20",
    "strategy.fraction_fit=1.0",
    "partition.method=dirichlet-balanced",
    "model.precision=bf16",
    "baselines.run=[]",
    "federation.eval_clients=false",
]
LABEL_ROUNDS = 5


@dataclasses.dataclass(frozen=True)
class Shard:
    train: TokenizedDataset
    val: TokenizedDataset


def shadow_shards(
    pool: TokenizedDataset,
    count: int,
    size: int,
    alpha: float,
    num_classes: int,
    rng: np.random.Generator,
) -> tuple[list[Shard], np.ndarray]:
    """``count`` shards of ``size`` from ``pool`` with Dir(α) label mixes."""
    by_class = [np.flatnonzero(pool.labels == c) for c in range(num_classes)]
    shards, hists = [], []
    for _ in range(count):
        counts = rng.multinomial(size, rng.dirichlet(np.full(num_classes, alpha)))
        idx = np.concatenate(
            [rng.choice(by_class[c], n) for c, n in enumerate(counts) if n]
        )
        shards.append(Shard(pool.subset(idx), pool.subset(idx[:1])))
        hists.append(label_histogram(pool.labels[idx], num_classes))
    return shards, np.stack(hists)


def dp_release(
    deltas: Sequence[dict[str, np.ndarray]], sigma: float, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """DP-FedAvg's release (:func:`fedpeft.privacy.dpfedavg.dp_mean`) with C
    the round's median update norm."""
    clip = float(np.median([global_norm(d) for d in deltas]))
    mean, _ = dp_mean(
        deltas[0],
        deltas,
        clip_norm=clip,
        noise_multiplier=sigma,
        expected_clients=len(deltas),
        rng=rng,
    )
    return mean


VIEWS = {"bias": ("head.bias",), "head": ("head.bias", "head.weight")}


def label_phase(alpha: float, seed: int, loss: str) -> dict[str, Any]:
    cfg = load_config(
        None,
        [
            *LABELS_BASE,
            f"partition.alpha={alpha}",
            f"seed={seed}",
            f"client.loss={loss}",
        ],
    )
    exp = build_experiment(cfg)
    run = FederatedRun(exp)
    params, _ = run.initial_round()
    c, n = exp.num_classes, len(exp.clients)
    rng = stream(seed, "baseline", 77)
    size = int(np.mean([len(s.train) for s in exp.clients]))
    shadows, shadow_hists = shadow_shards(exp.test, 40, size, alpha, c, rng)
    real = run.client.data_for
    run.client.data_for = lambda k: shadows[k - n] if k >= n else real(k)
    server = run.loop.server
    shadow_updates = run.client.fit_many(
        server.instructions(1, "fit", params, list(range(n, n + 40)))
    )
    updates = run.client.fit_many(server.instructions(1, "fit", params, list(range(n))))
    truth = [label_histogram(s.train.labels, c) for s in exp.clients]
    prior = label_histogram(exp.train.labels, c)
    sizes = np.array([u.num_examples for u in updates], float)
    mean = weighted_mean([u.delta for u in updates], sizes)
    cohort = sum(w * h for w, h in zip(sizes / sizes.sum(), truth, strict=True))

    def err(guess: Sequence[np.ndarray]) -> float:
        return float(
            np.mean([total_variation(g, h) for g, h in zip(guess, truth, strict=True)])
        )

    out: dict[str, Any] = {
        "alpha": alpha,
        "seed": seed,
        "loss": loss,
        "prior": err([prior] * n),
        "cohort_mixture": err([cohort] * n),
    }
    releases = {}
    for eps in EPSILONS:
        sigma = calibrate_noise_multiplier(
            eps, DELTA, LABEL_ROUNDS, "fixed", num_clients=n, clients_per_round=n
        )
        releases[eps] = dp_release([u.delta for u in updates], sigma, rng)
        out[f"dp_eps{eps:g}_sigma"] = sigma
    for view, keys in VIEWS.items():
        attack = LabelInference(keys=keys).fit(
            [u.delta for u in shadow_updates], shadow_hists
        )
        out[f"none_{view}"] = err([attack.predict(u.delta) for u in updates])
        out[f"secagg_{view}"] = err([attack.predict(mean)] * n)
        for eps, release in releases.items():
            out[f"dp_eps{eps:g}_{view}"] = err([attack.predict(release)] * n)
    return out


MEMBER_BASE = [
    "data.corpus=rotten-tomatoes",
    "data.max_train=1000",
    "data.max_test=1000",
    "federation.num_clients=10",
    "federation.rounds=6",
    "federation.eval_clients=false",
    "strategy.name=fedprompt",
    "peft.head_init=zeros",
    "model.precision=bf16",
    "baselines.run=[]",
]
PROTECTIONS: dict[str, list[str]] = {
    "none": [],
    "secagg": ["privacy.secagg=true"],
    **{
        f"dp_eps{e:g}": [
            f"privacy.client_dp={{target_epsilon={e}, clip_norm=0.1, delta={DELTA}}}"
        ]
        for e in EPSILONS
    },
}


def member_phase(seed: int, shadows: int) -> list[dict[str, Any]]:
    base = load_config(None, [*MEMBER_BASE, f"seed={seed}"])
    exp = build_experiment(base)
    members = [s.train for s in exp.clients]
    pool, part = concat_datasets([*members, exp.test])
    is_member = part < len(members)
    bs, prec = base.federation.eval_batch_size, base.model.eval_precision

    targets, budget = {}, 0
    for name, extra in PROTECTIONS.items():
        cfg = load_config(None, [*MEMBER_BASE, f"seed={seed}", *extra])
        result = FederatedRun(dataclasses.replace(exp, config=cfg)).run()
        budget = int(sum(r.get("train_examples_total", 0) for r in result.history))
        logits = predict_logits(result.model, pool, bs, prec)
        targets[name] = (logits, result.history[-1]["test_accuracy"], budget)
        print(f"  target {name}: accuracy {targets[name][1]:.3f}", flush=True)

    rng = stream(seed, "baseline", 78)
    shadow_phi, shadow_in = [], []
    started = time.perf_counter()
    c = base.client
    # every example IN exactly half of the shadows (Carlini et al.'s scheme)
    assignment = rng.random((shadows, len(pool))).argsort(axis=0) < shadows // 2
    for s in range(shadows):
        chosen = assignment[s]
        model = exp.new_adapter()
        state = model.trainable_state()
        model.load_trainable_state(
            {
                k: np.zeros_like(v) if k.startswith("head.") else v
                for k, v in state.items()
            }
        )
        steps = max(1, budget // c.batch_size)
        train_adapter(
            model,
            pool.subset(np.flatnonzero(chosen)),
            c.model_copy(update={"local_steps": steps}),
            stream(seed, "baseline", 79, s),
            precision=base.model.precision,
        )
        shadow_phi.append(
            confidence(predict_logits(model, pool, bs, prec), pool.labels)
        )
        shadow_in.append(chosen)
    print(f"  {shadows} shadows in {time.perf_counter() - started:.0f} s", flush=True)
    phi, ins = np.stack(shadow_phi), np.stack(shadow_in)
    rows = []
    for name, (logits, acc, _) in targets.items():
        loss = loss_scores(logits, pool.labels)
        lira = lira_scores(confidence(logits, pool.labels), phi, ins)
        rows.append(
            {
                "seed": seed,
                "protection": name,
                "test_accuracy": acc,
                "loss_auc": roc_auc(loss, is_member),
                "lira_auc": roc_auc(lira, is_member),
                "loss_tpr_at_1pct_fpr": tpr_at_fpr(loss, is_member, 0.01),
                "lira_tpr_at_1pct_fpr": tpr_at_fpr(lira, is_member, 0.01),
            }
        )
    return rows


INVERSION_BASE = [
    "data.corpus=rotten-tomatoes",
    "data.max_train=1000",
    "data.max_test=300",
    "model.max_length=16",
    "federation.num_clients=10",
    "baselines.run=[]",
]


def inversion_phase(
    seed: int, trials: int, iters: int, sweeps: int
) -> list[dict[str, Any]]:
    """Token recovery from one client's gradient of B examples (one SGD step,
    the strongest view), from its first AdamW step (g / (|g| + eps)), from a
    secure sum of 10 clients' gradients, and from DP-FedAvg releases of that
    sum (10 clients a round, 6 rounds, sigma calibrated to each epsilon)."""
    import torch

    from fedpeft.privacy.attacks.inversion import (
        batch_gradient,
        invert_prompt_update,
        label_from_bias,
        token_f1,
    )

    cfg = load_config(None, [*INVERSION_BASE, f"seed={seed}"])
    exp = build_experiment(cfg)
    model = exp.new_adapter()
    tokenizer = exp.backbone.tokenizer
    special = set(tokenizer.all_special_ids)
    width = cfg.model.max_length
    fixed = {0: tokenizer.cls_token_id, width - 1: tokenizer.sep_token_id}
    data = exp.test
    full = np.flatnonzero(data.lengths == width)
    rng = stream(seed, "baseline", 80)
    sigmas = {
        eps: calibrate_noise_multiplier(
            eps, DELTA, 6, "fixed", num_clients=10, clients_per_round=10
        )
        for eps in EPSILONS
    }
    rows = []

    def batch(size: int) -> tuple[torch.Tensor, torch.Tensor]:
        idx = rng.choice(full, size, replace=False)
        ids = data.input_ids[idx, :width].astype(np.int64)
        return torch.from_numpy(ids), torch.from_numpy(data.labels[idx])

    def distance(observed: dict, ids: torch.Tensor, labels: torch.Tensor) -> float:
        """The gradient distance of the true batch: how well the answer can
        match at best (0 without noise)."""
        got = batch_gradient(model, ids, labels)
        return float(
            1 - torch.nn.functional.cosine_similarity(flat(got), flat(observed), dim=0)
        )

    def flat(grads: dict) -> torch.Tensor:
        return torch.cat([grads[n].reshape(-1) for n in sorted(grads)])

    def attack(
        view: str, observed: dict, ids: torch.Tensor, labels: torch.Tensor
    ) -> None:
        gen = torch.Generator().manual_seed(int(rng.integers(2**31)))
        started = time.perf_counter()
        known = torch.tensor([label_from_bias(observed)]) if len(ids) == 1 else None
        got = invert_prompt_update(
            model,
            observed,
            len(ids),
            width,
            iters=iters,
            labels=known,
            fixed=fixed,
            sweeps=sweeps,
            candidates=max(8, 64 // len(ids)),
            generator=gen,
        )
        p_, r_, f1 = token_f1(
            got.tokens.reshape(-1).tolist(), ids.reshape(-1).tolist(), special
        )
        rand = torch.randint(
            0, model.backbone.word_embeddings.weight.shape[0], ids.shape, generator=gen
        )
        _, _, f1_random = token_f1(
            rand.reshape(-1).tolist(), ids.reshape(-1).tolist(), special
        )
        rows.append(
            {
                "seed": seed,
                "view": view,
                "examples": len(ids),
                "tokens": width,
                "precision": p_,
                "recall": r_,
                "f1": f1,
                "f1_random_tokens": f1_random,
                "distance": got.distance,
                "truth_distance": distance(observed, ids, labels),
                "seconds": time.perf_counter() - started,
                "truth": tokenizer.decode(ids[0]),
                "recovered": tokenizer.decode(got.tokens[0]),
            }
        )
        print(
            f"  {view} B={len(ids)}: F1 {f1:.2f} (random {f1_random:.2f}, "
            f"distance {got.distance:.3f}, {rows[-1]['seconds']:.0f} s)",
            flush=True,
        )

    for size, views, count in (
        (1, ("sgd", "adamw"), trials),
        (2, ("sgd",), max(1, trials // 2)),
        (4, ("sgd",), max(1, trials // 2)),
    ):
        for _ in range(count):
            ids, labels = batch(size)
            g = batch_gradient(model, ids, labels)
            if "sgd" in views:
                attack("none_sgd", g, ids, labels)
            if "adamw" in views and _ < max(1, trials // 2):
                first = {k: v / (v.abs() + 1e-8) for k, v in g.items()}
                attack("none_adamw_step", first, ids, labels)
    for _ in range(max(1, trials // 3)):
        ids, labels = batch(10)  # ten clients of one example each
        grads = [
            batch_gradient(model, ids[i : i + 1], labels[i : i + 1]) for i in range(10)
        ]
        total = {k: sum(g[k] for g in grads) for k in grads[0]}
        attack("secagg_sum_of_10", total, ids, labels)
        norms = [
            float(torch.cat([v.reshape(-1) for v in g.values()]).norm()) for g in grads
        ]
        clip = float(np.median(norms))
        clipped = {
            k: sum(g[k] * min(1.0, clip / n) for g, n in zip(grads, norms, strict=True))
            for k in total
        }
        for eps, sigma in sigmas.items():
            noise = torch.Generator().manual_seed(int(rng.integers(2**31)))
            noisy = {
                k: v + torch.randn(v.shape, generator=noise) * sigma * clip
                for k, v in clipped.items()
            }
            attack(f"dp_eps{eps:g}_sum_of_10", noisy, ids, labels)
    return rows


def _fmt(values: Sequence[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{np.mean(values):.3f} ± {np.std(values, ddof=1):.3f}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--phases", nargs="+", default=["labels", "membership"])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--alphas", type=float, nargs="+", default=[0.5, 0.1])
    p.add_argument("--shadows", type=int, default=8)
    p.add_argument("--trials", type=int, default=6)
    p.add_argument("--iters", type=int, default=200)
    p.add_argument("--sweeps", type=int, default=8)
    p.add_argument("--losses", nargs="+", default=["balanced-softmax", "cross-entropy"])
    p.add_argument(
        "--results", type=Path, default=Path("bench/results/privacy_attacks.json")
    )
    args = p.parse_args()
    stored: dict[str, Any] = {}
    if "labels" in args.phases:
        cells = []
        for loss in args.losses:
            for alpha in args.alphas:
                for seed in args.seeds:
                    cell = label_phase(alpha, seed, loss)
                    print(cell, flush=True)
                    cells.append(cell)
        stored["label_inference"] = cells
        keys = ["prior", "cohort_mixture"] + [
            f"{v}_{f}"
            for v in ["none", "secagg", *(f"dp_eps{e:g}" for e in EPSILONS)]
            for f in VIEWS
        ]
        print("\n| loss | Dir(α) | " + " | ".join(keys) + " |")
        print("|---|---|" + "---|" * len(keys))
        for loss in args.losses:
            for alpha in args.alphas:
                got = [c for c in cells if (c["alpha"], c["loss"]) == (alpha, loss)]
                vals = " | ".join(_fmt([c[k] for c in got]) for k in keys)
                print(f"| {loss} | {alpha} | {vals} |")
    if "membership" in args.phases:
        rows = []
        for seed in args.seeds:
            rows += member_phase(seed, args.shadows)
        stored["membership"] = rows
        cols = [
            "test_accuracy",
            "loss_auc",
            "lira_auc",
            "loss_tpr_at_1pct_fpr",
            "lira_tpr_at_1pct_fpr",
        ]
        print("\n| protection | " + " | ".join(cols) + " |")
        print("|---|" + "---|" * len(cols))
        for name in PROTECTIONS:
            got = [r for r in rows if r["protection"] == name]
            print(
                f"| {name} | "
                + " | ".join(_fmt([r[k] for r in got]) for k in cols)
                + " |"
            )
    if "inversion" in args.phases:
        rows = []
        for seed in args.seeds:
            rows += inversion_phase(seed, args.trials, args.iters, args.sweeps)
        stored["inversion"] = rows
        print(
            "\n| view | examples | token F1 | random-token F1 | gradient distance "
            "| true batch's distance |"
        )
        print("|---|---|---|---|---|---|")
        for view, size in sorted({(r["view"], r["examples"]) for r in rows}):
            got = [r for r in rows if (r["view"], r["examples"]) == (view, size)]
            cells = [
                _fmt([r[k] for r in got])
                for k in ("f1", "f1_random_tokens", "distance", "truth_distance")
            ]
            print(f"| {view} | {size} | " + " | ".join(cells) + " |")
    merge_results(args.results, stored)


if __name__ == "__main__":
    main()
