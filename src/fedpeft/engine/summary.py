"""What a run reports: summary.json's content, computed from the round records."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from fedpeft.config import RunConfig
from fedpeft.engine.simulation import FederatedResult
from fedpeft.experiment import Experiment
from fedpeft.models.device import describe_cpu, describe_device
from fedpeft.models.precision import cpu_native_bf16, resolve_precision
from fedpeft.wire import payload_bytes

CONVERGENCE_MARGIN = 0.01
"""The convergence target sits this far (absolute accuracy) below centralized."""
CONVERGENCE_RULE = "centralized accuracy - 0.01"


def final_metrics(records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    evaluated = [r for r in records if r.get("test_accuracy") is not None]
    last = evaluated[-1]
    return {
        "test_accuracy": float(last["test_accuracy"]),
        "test_macro_f1": float(last["test_macro_f1"]),
        "best_accuracy": float(max(r["test_accuracy"] for r in evaluated)),
        **{
            k: v
            for k, v in last.items()
            if k.startswith(("test_accuracy@", "test_worst_group"))
        },
    }


def _final_groups(last: Mapping[str, Any]) -> dict[str, Any]:
    """The last evaluation's per-group test accuracies (``federation.eval_groups``)
    as ``final_accuracy@COLUMN=VALUE``, with the worst group."""
    out: dict[str, Any] = {
        "final_" + k.removeprefix("test_"): v
        for k, v in last.items()
        if k.startswith("test_accuracy@")
    }
    if "test_worst_group" in last:
        out["final_worst_group_accuracy"] = last["test_worst_group_accuracy"]
        out["final_worst_group"] = last["test_worst_group"]
    return out


def rounds_to_reach(
    history: Sequence[Mapping[str, Any]], target: float, *, from_round: int = 1
) -> int | None:
    """First round ``>= from_round`` whose test accuracy is at least ``target``.

    Round 0 is the warm start (the linear-probe head, before any federated
    round), so it is not counted unless ``from_round=0``. Rounds without a test
    evaluation are skipped. None if no such round.
    """
    for record in history:
        acc = record.get("test_accuracy")
        if record["round"] >= from_round and acc is not None and acc >= target:
            return int(record["round"])
    return None


def convergence(
    history: Sequence[Mapping[str, Any]], target: float | None
) -> dict[str, Any]:
    """How much federated training it took to reach ``target`` test accuracy.

    Counted from round 1; round 0 (the warm start) is reported apart. With
    ``eval_every > 1`` the reached round is the first *evaluated* one, so the
    figures are upper bounds.

    Args:
        history: Round records (``round``, ``test_accuracy`` when evaluated,
            ``bytes_up``, ``bytes_down``, ``client_flops_total``, ``clients``,
            ``failed_clients``), as :class:`fedpeft.engine.loop.RoundLoop`
            writes them.
        target: The accuracy to reach in ``[0, 1]``; None when there is none
            (no centralized baseline): every target figure is then None.

    Returns:
        ``target``; ``rounds``: the first round r >= 1 at the target;
        ``bytes``: up + down over rounds 1..r; ``bytes_per_client``: what one
        participating client exchanged over rounds 1..r on average (uploads
        over the clients that sent an update in some round, downloads over the
        clients that were sent the model, as in ``bytes_up_per_client_round``);
        ``client_flops``: the clients' FLOPs over rounds 1..r (these four None
        when never reached); ``warm_start_accuracy``: round 0's test accuracy;
        ``warm_start_met_target``: whether it was already at the target (None
        without a target or a round-0 evaluation).
    """
    warm = next((r for r in history if r["round"] == 0), {})
    warm_acc = warm.get("test_accuracy")
    out: dict[str, Any] = {
        "target": target,
        "rounds": None,
        "bytes": None,
        "bytes_per_client": None,
        "client_flops": None,
        "warm_start_accuracy": None if warm_acc is None else float(warm_acc),
        "warm_start_met_target": None
        if target is None or warm_acc is None
        else bool(warm_acc >= target),
    }
    reached = None if target is None else rounds_to_reach(history, target)
    if reached is not None:
        spent = [r for r in history if 1 <= r["round"] <= reached]
        out.update(rounds=reached, **training_cost(spent))
    return out


def training_cost(records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Bytes (all, and per participating client) and client FLOPs of ``records``."""
    up = sum(r.get("bytes_up", 0) for r in records)
    down = sum(r.get("bytes_down", 0) for r in records)
    senders: set[int] = set()
    receivers: set[int] = set()
    for r in records:
        receivers.update(r.get("clients", []))
        senders.update(set(r.get("clients", [])) - set(r.get("failed_clients", [])))
    return {
        "bytes": int(up + down),
        "bytes_per_client": up / max(len(senders), 1) + down / max(len(receivers), 1),
        "client_flops": float(sum(r.get("client_flops_total", 0.0) for r in records)),
    }


def convergence_target(central: float | None) -> float | None:
    """The convergence target of a centralized accuracy (:data:`CONVERGENCE_RULE`)."""
    return None if central is None else central - CONVERGENCE_MARGIN


def full_model_bytes(exp: Experiment) -> int:
    """Serialized size of the whole model's payload (backbone + head), the unit
    that FedAvg full fine-tuning sends each round."""
    arrays = {
        n: p.detach().float().cpu().numpy()
        for n, p in exp.backbone.model.named_parameters()
    }
    head = exp.num_classes * (exp.backbone.hidden_size + 1)
    arrays["head.weight"] = np.zeros(head, np.float32)  # shape does not change the size
    return payload_bytes(arrays)


def summarize(
    exp: Experiment,
    fed: FederatedResult,
    baselines: Mapping[str, Any],
    wall_seconds: float,
) -> dict[str, Any]:
    """The summary.json content (schema in docs/architecture.md)."""
    cfg = exp.config
    history = fed.history
    evaluated = [r for r in history if r.get("test_accuracy") is not None]
    rounds_run = [r for r in history if r["round"] > 0]
    n_up = sum(len(r["clients"]) - len(r.get("failed_clients", [])) for r in rounds_run)
    n_down = sum(len(r["clients"]) for r in rounds_run)
    full = full_model_bytes(exp)
    down_per = sum(r["bytes_down"] for r in rounds_run) / max(n_down, 1)
    central = baselines.get("centralized", {}).get("test_accuracy")
    return {
        "name": cfg.name,
        "corpus": exp.corpus.name,
        "backbone": cfg.model.backbone,
        "method": cfg.peft.method,
        "strategy": cfg.strategy.name,
        "num_clients": cfg.federation.num_clients,
        "rounds": cfg.federation.rounds,
        "seed": cfg.seed,
        "partition": cfg.partition.method,
        "alpha": cfg.partition.model_dump().get("alpha"),
        "trainable_parameters": fed.model.num_trainable(),
        "backbone_parameters": exp.backbone.num_parameters,
        "federated": {
            "final_accuracy": float(evaluated[-1]["test_accuracy"]),
            "final_macro_f1": float(evaluated[-1]["test_macro_f1"]),
            "best_accuracy": float(max(r["test_accuracy"] for r in evaluated)),
            **_final_groups(evaluated[-1]),
            "convergence": {
                "target_rule": CONVERGENCE_RULE,
                **convergence(history, convergence_target(central)),
            },
            "bytes_up_total": int(fed.totals["bytes_up"]),
            "bytes_down_total": int(fed.totals["bytes_down"]),
            "bytes_up_per_client_round": sum(r["bytes_up"] for r in rounds_run)
            / max(n_up, 1),
            "bytes_down_per_client_round": down_per,
            "full_model_bytes": full,
            "payload_fraction_of_full": down_per / full,
            "client_flops_total": fed.totals["client_flops"],
            "train_examples": int(fed.totals["train_examples"]),
            "wall_seconds": wall_seconds,
            "train_examples_per_second": fed.totals["train_examples"]
            / max(fed.totals["train_seconds"], 1e-9),
        },
        "baselines": dict(baselines),
        "privacy": privacy_summary(cfg, history),
        "threats": threat_summary(cfg),
        "environment": environment(
            exp.backbone.device, cfg.model.precision, cfg.model.eval_precision
        ),
    }


def threat_summary(cfg: RunConfig) -> dict[str, Any]:
    """The robust rule and the attack of the run (empty when both are off)."""
    out: dict[str, Any] = {}
    if cfg.robust.rule != "mean":
        out["robust"] = cfg.robust.model_dump()
    a = cfg.attack
    if a.kind != "none":
        from fedpeft.client.attacks import choose_attackers

        attackers = choose_attackers(cfg.federation.num_clients, a.fraction, cfg.seed)
        out["attack"] = {**a.model_dump(), "attackers": sorted(attackers)}
    return out


ENVIRONMENT_PACKAGES = (
    "fedpeft",
    "torch",
    "transformers",
    "tokenizers",
    "peft",
    "numpy",
    "scikit-learn",
    "flwr-datasets",
    "dp-accounting",
    "cryptography",
)


def environment(
    device: torch.device, precision: str, eval_precision: str
) -> dict[str, str]:
    """Python, the versions of the packages that shape a run's numbers and
    the device it computed on.

    Dependencies are version ranges, so two fresh installs can differ; runs
    record what they ran on (a 20 Newsgroups result moved by 1.25 points
    between two environments with the same code).
    """
    import importlib.metadata
    import platform

    out = {"python": platform.python_version()}
    for name in ENVIRONMENT_PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "not installed"
    out["torch_threads"] = str(torch.get_num_threads())
    out["device"] = describe_device(device)
    out["cpu"] = describe_cpu()
    out["cpu_bf16"] = "native" if cpu_native_bf16() else "emulated"
    out["precision"] = (
        f"train {resolve_precision(precision, device)}, "
        f"eval {resolve_precision(eval_precision, device)}"
    )
    return out


def privacy_summary(
    cfg: RunConfig, history: Sequence[Mapping[str, Any]]
) -> dict[str, Any]:
    """The last round's privacy figures (empty without SecAgg or DP)."""
    last = history[-1] if history else {}
    keys = (
        "epsilon",
        "delta",
        "noise_multiplier",
        "record_epsilon_max",
        "record_delta",
        "record_noise_multiplier",
    )
    out: dict[str, Any] = {k: last[k] for k in keys if k in last}
    if cfg.privacy.secagg:
        out["secagg"] = True
    return out
