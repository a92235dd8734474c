"""One experiment end to end: the federated run, its baselines, the summary."""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fedpeft.config import ConfigError, RunConfig
from fedpeft.engine.host import configure_host
from fedpeft.engine.references import run_baselines
from fedpeft.engine.simulation import FederatedResult, FederatedRun
from fedpeft.engine.summary import environment, summarize
from fedpeft.experiment import Experiment, build_experiment, check_names
from fedpeft.rundir.directory import open_run_dir
from fedpeft.rundir.files import write_atomic
from fedpeft.rundir.sink import MetricsSink
from fedpeft.server.mixed_secure import SECURE_RULES
from fedpeft.wire import serialize

logger = logging.getLogger(__name__)

EventCallback = Callable[[str, dict[str, Any]], None]
FederatedFactory = Callable[
    [Experiment, Path, Callable[[dict[str, Any]], None]], FederatedRun
]
"""Builds the federated run from the experiment, the run directory and the
per-round callback (the Flower ServerApp passes one with its own runtime)."""


def _ignore(kind: str, payload: dict[str, Any]) -> None:
    del kind, payload


def run_experiment(
    cfg: RunConfig,
    *,
    resume: bool = False,
    overwrite: bool = False,
    on_event: EventCallback | None = None,
    federated: FederatedFactory | None = None,
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
        return _run(cfg, run_dir, resume=resume, on_event=on_event, federated=federated)


def _run(
    cfg: RunConfig,
    run_dir: Path,
    *,
    resume: bool,
    on_event: EventCallback | None,
    federated: FederatedFactory | None = None,
) -> dict[str, Any]:
    emit = on_event or _ignore
    configure_host(cfg)
    exp = build_experiment(cfg)
    write_partition_report(exp, run_dir)
    emit(
        "start",
        {"rounds": cfg.federation.rounds, "runs": ["federated", *cfg.baselines.run]},
    )
    if cfg.devices.profiles is not None:
        return run_device_experiment(exp, run_dir, emit, resume)
    build = federated or functools.partial(_embedded, emit=emit)
    fed = build(exp, run_dir, lambda r: emit("round", r)).run(resume)
    wall = fed.wall_seconds  # summed over the sessions of a resumed run
    baselines, curves = run_baselines(exp, fed, run_dir, resume, emit)
    sink = MetricsSink(run_dir / "metrics.jsonl")
    for record in curves:
        sink.write(record)
    summary = summarize(exp, fed, baselines, wall)
    write_atomic(run_dir / "summary.json", json.dumps(summary, indent=2))
    save_adapter(fed, exp, run_dir / "adapter")
    _plot(run_dir)
    emit("done", summary)
    return summary


def _embedded(
    exp: Experiment,
    run_dir: Path,
    on_round: Callable[[dict[str, Any]], None],
    emit: EventCallback = _ignore,
) -> FederatedRun:
    def progress(name: str, done: int, total: int) -> None:
        emit("progress", {"name": name, "completed": done, "total": total})

    return FederatedRun(exp, run_dir=run_dir, on_round=on_round, on_progress=progress)


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
    if cfg.privacy.client_dp or cfg.privacy.record_dp:
        raise ConfigError(
            "devices.profiles: mixed-size LoRA averages each LoRA pair over the "
            "clients that hold it, so one client's weight in a pair depends on who "
            "else holds it and the DP-FedAvg sensitivity C/m̄ does not hold "
            "(record-level DP-SGD supports soft prompts only); drop "
            "privacy.client_dp / privacy.record_dp or unset devices.profiles"
        )
    if cfg.privacy.secagg and cfg.devices.rule not in SECURE_RULES:
        raise ConfigError(
            f"devices.rule = {cfg.devices.rule!r} with privacy.secagg: FlexLoRA "
            "needs every client's dense out×in product and per-rank weight totals, "
            f"which are not summed securely here; use one of {SECURE_RULES} or "
            "turn privacy.secagg off"
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
    write_atomic(
        run_dir / "allocation.json",
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
    )
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
            "wall_seconds": result.wall_seconds,
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
        "environment": environment(
            exp.backbone.device, cfg.model.precision, cfg.model.eval_precision
        ),
    }
    write_atomic(run_dir / "summary.json", json.dumps(summary, indent=2))
    (run_dir / "adapter").mkdir(exist_ok=True)
    write_atomic(run_dir / "adapter" / "adapter.safetensors", serialize(result.params))
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
    write_atomic(path, json.dumps(report, indent=1, default=int))
    plot_partition(
        labels,
        exp.partition,
        exp.corpus.label_names,
        run_dir / "plots" / "partition.png",
    )
    return path


def save_adapter(fed: FederatedResult, exp: Experiment, out: Path) -> None:
    """The final global adapter: adapter.safetensors + a JSON description."""
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / "adapter.safetensors", serialize(fed.params))
    cfg = exp.config
    meta = {
        "method": cfg.peft.method,
        "backbone": cfg.model.backbone,
        "peft": cfg.peft.model_dump(mode="json"),
        "num_classes": exp.num_classes,
        "label_names": list(exp.corpus.label_names),
        "max_length": cfg.model.max_length,
    }
    write_atomic(out / "adapter_config.json", json.dumps(meta, indent=2))


def _plot(run_dir: Path) -> None:
    try:
        from fedpeft.reporting.plots import plot_run
    except ImportError:  # reporting is optional at import time for the engine
        logger.warning("fedpeft.reporting unavailable; skipping plots")
        return
    plot_run(run_dir)
