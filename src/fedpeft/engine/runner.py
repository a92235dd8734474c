"""One experiment end to end: the federated run, its baselines, the summary."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fedpeft.baselines import (
    run_centralized,
    run_linear_probe,
    run_local_only,
    run_zero_shot,
)
from fedpeft.config import ConfigError, RunConfig
from fedpeft.experiment import Experiment, build_experiment, check_names
from fedpeft.engine.simulation import FederatedResult, FederatedRun
from fedpeft.rundir.directory import open_run_dir
from fedpeft.rundir.sink import MetricsSink
from fedpeft.models.device import describe_device
from fedpeft.wire import payload_bytes, serialize

logger = logging.getLogger(__name__)

EventCallback = Callable[[str, dict[str, Any]], None]


def _ignore(kind: str, payload: dict[str, Any]) -> None:
    del kind, payload


def run_experiment(
    cfg: RunConfig,
    *,
    resume: bool = False,
    overwrite: bool = False,
    on_event: EventCallback | None = None,
) -> dict[str, Any]:
    """Run the federated experiment of ``cfg`` and its baselines.

    Writes config.toml, metrics.jsonl, baselines.json, summary.json, the final
    adapter and plots to ``cfg.run_dir``, holding its lock throughout (see
    :class:`~fedpeft.rundir.directory.RunDirectory`); returns the summary.

    Raises:
        RunDirError: the run directory holds another run (pass ``resume`` or
            ``overwrite``), a different config on resume, or is in use.
    """
    check_names(cfg)
    check_devices(cfg)
    with open_run_dir(cfg, resume=resume, overwrite=overwrite) as run_dir:
        return _run(cfg, run_dir, resume=resume, on_event=on_event)


def _run(
    cfg: RunConfig, run_dir: Path, *, resume: bool, on_event: EventCallback | None
) -> dict[str, Any]:
    emit = on_event or _ignore
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    exp = build_experiment(cfg)
    write_partition_report(exp, run_dir)
    emit(
        "start",
        {"rounds": cfg.federation.rounds, "runs": ["federated", *cfg.baselines.run]},
    )
    started = time.perf_counter()
    if cfg.devices.profiles is not None:
        return run_device_experiment(exp, run_dir, emit, resume)
    fed = FederatedRun(exp, run_dir=run_dir, on_round=lambda r: emit("round", r)).run(
        resume
    )
    wall = time.perf_counter() - started
    baselines, curves = _run_baselines(exp, fed, run_dir, resume, emit)
    sink = MetricsSink(run_dir / "metrics.jsonl")
    for record in curves:
        sink.write(record)
    summary = summarize(exp, fed, baselines, wall)
    (run_dir / "summary.json").write_text(
        json.dumps(summary, indent=2), encoding="utf-8"
    )
    save_adapter(fed, exp, run_dir / "adapter")
    _plot(run_dir)
    emit("done", summary)
    return summary


def check_devices(cfg: RunConfig) -> None:
    """What a run with device profiles (``[devices]``) supports.

    Raises:
        ConfigError: naming the setting to change.
    """
    from fedpeft.devices import ALLOCATION_POLICIES

    if cfg.devices.profiles is None:
        return
    if cfg.peft.method != "lora":
        raise ConfigError(
            f"devices.profiles is set, which allocates a LoRA size to every client, "
            f"but peft.method = {cfg.peft.method!r}; set peft.method=lora or unset "
            "devices.profiles"
        )
    if cfg.privacy.secagg or cfg.privacy.client_dp or cfg.privacy.record_dp:
        raise ConfigError(
            "devices.profiles: mixed-size LoRA merges each LoRA pair over the "
            "clients that hold it, with per-pair weights that neither the secure "
            "sum nor the DP-FedAvg analysis here covers (and record-level DP-SGD "
            "supports soft prompts only); turn privacy off or unset devices.profiles"
        )
    if cfg.devices.policy not in ALLOCATION_POLICIES:
        raise ConfigError(
            f"devices.policy: {ALLOCATION_POLICIES.unknown_message(cfg.devices.policy)}"
        )


def run_device_experiment(
    exp: Experiment, run_dir: Path, emit: EventCallback, resume: bool
) -> dict[str, Any]:
    """Clients of mixed devices, each training the LoRA size allocated to it.

    Writes allocation.json (per client: device, size, predicted memory, time and
    bytes, or why it was excluded), metrics.jsonl and summary.json. The
    configured baselines are not run (the comparison here is between
    allocations and aggregation rules: bench/heterogeneous.py).
    """
    from fedpeft.devices.plan import plan_devices

    cfg = exp.config
    if cfg.baselines.run:
        logger.warning(
            "baselines %s are not run with device profiles", list(cfg.baselines.run)
        )
    plan = plan_devices(exp)
    summary_alloc = plan.allocation.summary()
    (run_dir / "allocation.json").write_text(
        json.dumps(
            {
                "policy": plan.allocation.policy,
                "deadline_s": plan.allocation.deadline_s,
                "menu": [s.label for s in plan.menu],
                "clients": plan.allocation.to_rows(),
            },
            indent=1,
            default=str,
        ),
        encoding="utf-8",
    )
    started = time.perf_counter()
    result = FederatedRun(
        exp,
        run_dir=run_dir,
        sizes=plan.sizes,
        rule=cfg.devices.rule,
        on_round=lambda r: emit("round", r),
    ).run(resume)
    history = result.history
    rounds_run = history[1:]
    client_rounds = sum(len(r["accepted_clients"]) for r in rounds_run)
    evaluated = [r for r in history if r.get("test_accuracy") is not None]
    excluded = [k for k, s in enumerate(plan.sizes) if s is None]
    accs = result.client_val_accuracy
    summary = {
        "name": cfg.name,
        "corpus": exp.corpus.name,
        "backbone": cfg.model.backbone,
        "method": "lora",
        "strategy": cfg.devices.rule,
        "num_clients": cfg.federation.num_clients,
        "rounds": cfg.federation.rounds,
        "seed": cfg.seed,
        "partition": cfg.partition.method,
        "alpha": cfg.partition.model_dump().get("alpha"),
        "backbone_parameters": exp.backbone.num_parameters,
        "federated": {
            "final_accuracy": float(evaluated[-1]["test_accuracy"]),
            "final_macro_f1": float(evaluated[-1]["test_macro_f1"]),
            "best_accuracy": float(max(r["test_accuracy"] for r in evaluated)),
            "bytes_per_client_round": sum(
                r["bytes_up"] + r["bytes_down"] for r in rounds_run
            )
            / max(client_rounds, 1),
            "client_flops_total": float(
                sum(r["client_flops_total"] for r in rounds_run)
            ),
            "wall_seconds": time.perf_counter() - started,
        },
        "devices": {
            "profiles": cfg.devices.profiles,
            "policy": cfg.devices.policy,
            "rule": cfg.devices.rule,
            "deadline_s": cfg.devices.deadline_s,
            "participating": summary_alloc.participating,
            "excluded": summary_alloc.excluded,
            "excluded_memory": summary_alloc.excluded_memory,
            "excluded_deadline": summary_alloc.excluded_deadline,
            "excluded_by_fixed_largest": plan.excluded_by_fixed,
            "sizes": {s.label: sum(1 for x in plan.sizes if x == s) for s in plan.menu},
            "val_accuracy_excluded": _mean_of(accs, excluded),
            "val_accuracy_participating": _mean_of(
                accs, [k for k in accs if k not in excluded]
            ),
        },
        "baselines": {},
        "privacy": {},
        "environment": environment(exp.backbone.device),
    }
    (run_dir / "summary.json").write_text(
        json.dumps(summary, indent=2), encoding="utf-8"
    )
    (run_dir / "adapter").mkdir(exist_ok=True)
    (run_dir / "adapter" / "adapter.safetensors").write_bytes(serialize(result.params))
    _plot(run_dir)
    emit("done", summary)
    return summary


def _mean_of(values: Mapping[int, float], keys: Sequence[int]) -> float | None:
    """Mean of ``values`` over ``keys`` that have one (None if none has)."""
    picked = [values[k] for k in keys if k in values]
    return float(np.mean(picked)) if picked else None


def write_partition_report(exp: Experiment, run_dir: Path) -> Path:
    """partition.json (per-client sizes and label counts) and plots/partition.png."""
    from fedpeft.data import label_skew, partition_table, plot_partition

    labels = exp.corpus.train.labels
    rows = partition_table(labels, exp.partition, exp.corpus.label_names)
    skew = label_skew(labels, exp.partition, exp.num_classes)
    report = {
        "method": exp.config.partition.method,
        "label_skew": skew,
        "clients": rows,
    }
    path = run_dir / "partition.json"
    path.write_text(json.dumps(report, indent=1, default=int), encoding="utf-8")
    plot_partition(
        labels,
        exp.partition,
        exp.corpus.label_names,
        run_dir / "plots" / "partition.png",
    )
    return path


def _run_baselines(
    exp: Experiment,
    fed: FederatedResult,
    run_dir: Path,
    resume: bool,
    emit: EventCallback,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Run the configured baselines; finished ones are kept in baselines.json and
    skipped when resuming."""
    path = run_dir / "baselines.json"
    done: dict[str, Any] = (
        json.loads(path.read_text()) if resume and path.exists() else {}
    )
    cfg = exp.config
    for name in cfg.baselines.run:
        if name in done:
            continue
        emit("phase", {"name": name, "status": "start"})
        done[name] = _one_baseline(name, exp, fed, run_dir, emit, resume)
        path.write_text(json.dumps(done), encoding="utf-8")
        emit(
            "phase", {"name": name, "status": "done", "metrics": done[name]["metrics"]}
        )
    curves = [r for entry in done.values() for r in entry.get("curve", [])]
    return {k: v["metrics"] for k, v in done.items()}, curves


def _one_baseline(
    name: str,
    exp: Experiment,
    fed: FederatedResult,
    run_dir: Path,
    emit: EventCallback,
    resume: bool,
) -> dict[str, Any]:
    cfg = exp.config
    if name == "centralized":
        budget = int(fed.totals["train_examples"]) or len(exp.train)
        curve = run_centralized(exp, budget, cfg.federation.rounds)
        return {
            "metrics": {**_final_metrics(curve), "train_examples": budget},
            "curve": curve,
        }
    if name == "full-finetune":
        client_cfg = cfg.client.model_copy(update={"lr": cfg.client.full_lr})
        strategy_cfg = cfg.strategy.model_copy(update={"name": "fedavg"})
        result = FederatedRun(
            exp,
            method="full",
            client_cfg=client_cfg,
            strategy_cfg=strategy_cfg,
            run_dir=run_dir / "full-finetune",
            label="full-finetune",
            private=False,  # the non-private reference point
            on_round=lambda r: emit("round", r),
        ).run(resume)
        curve = [
            {
                k: r[k]
                for k in (
                    "run",
                    "round",
                    "test_accuracy",
                    "test_macro_f1",
                    "bytes_up",
                    "bytes_down",
                )
                if k in r
            }
            for r in result.history
        ]
        metrics = {
            **_final_metrics(result.history),
            "bytes_up_total": result.totals["bytes_up"],
            "bytes_down_total": result.totals["bytes_down"],
            "client_flops_total": result.totals["client_flops"],
        }
        return {"metrics": metrics, "curve": curve}
    runners = {
        "linear-probe": run_linear_probe,
        "zero-shot": run_zero_shot,
        "local-only": run_local_only,
    }
    return {"metrics": runners[name](exp)}


def _final_metrics(records: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    evaluated = [r for r in records if r.get("test_accuracy") is not None]
    last = evaluated[-1]
    return {
        "test_accuracy": float(last["test_accuracy"]),
        "test_macro_f1": float(last["test_macro_f1"]),
        "best_accuracy": float(max(r["test_accuracy"] for r in evaluated)),
    }


def rounds_to_reach(history: Sequence[Mapping[str, Any]], target: float) -> int | None:
    """First round whose test accuracy is at least ``target`` (None if never)."""
    for record in history:
        acc = record.get("test_accuracy")
        if acc is not None and acc >= target:
            return int(record["round"])
    return None


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
            "rounds_to_95pct_centralized": rounds_to_reach(history, 0.95 * central)
            if central is not None
            else None,
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
        "privacy": _privacy_summary(cfg, history),
        "environment": environment(exp.backbone.device),
    }


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


def environment(device: torch.device) -> dict[str, str]:
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
    return out


def _privacy_summary(
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


def save_adapter(fed: FederatedResult, exp: Experiment, out: Path) -> None:
    """The final global adapter: adapter.safetensors + a JSON description."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "adapter.safetensors").write_bytes(serialize(fed.params))
    cfg = exp.config
    meta = {
        "method": cfg.peft.method,
        "backbone": cfg.model.backbone,
        "peft": cfg.peft.model_dump(mode="json"),
        "num_classes": exp.num_classes,
        "label_names": list(exp.corpus.label_names),
        "max_length": cfg.model.max_length,
    }
    (out / "adapter_config.json").write_text(
        json.dumps(meta, indent=2), encoding="utf-8"
    )


def _plot(run_dir: Path) -> None:
    try:
        from fedpeft.reporting.plots import plot_run
    except ImportError:  # reporting is optional at import time for the engine
        logger.warning("fedpeft.reporting unavailable; skipping plots")
        return
    plot_run(run_dir)
