"""The reference runs beside the federated one (``baselines.run``): each is run
once, kept in baselines.json and skipped when a run is resumed."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fedpeft.baselines import (
    run_centralized,
    run_linear_probe,
    run_local_only,
    run_zero_shot,
)
from fedpeft.engine.simulation import FederatedResult, FederatedRun
from fedpeft.engine.summary import final_metrics
from fedpeft.experiment import Experiment
from fedpeft.rundir.files import write_atomic
from fedpeft.strategies import strategy_config

EventCallback = Callable[[str, dict[str, Any]], None]
BaselineRun = Callable[
    [Experiment, FederatedResult, Path, EventCallback, bool], dict[str, Any]
]


def run_baselines(
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
        done[name] = BASELINE_RUNS[name](exp, fed, run_dir, emit, resume)
        write_atomic(path, json.dumps(done))
        emit(
            "phase", {"name": name, "status": "done", "metrics": done[name]["metrics"]}
        )
    curves = [r for entry in done.values() for r in entry.get("curve", [])]
    return {k: v["metrics"] for k, v in done.items()}, curves


def _centralized(
    exp: Experiment,
    fed: FederatedResult,
    run_dir: Path,
    emit: EventCallback,
    resume: bool,
) -> dict[str, Any]:
    """Centralized tuning of the same adapter with the federated example budget."""
    budget = int(fed.totals["train_examples"]) or len(exp.train)
    curve = run_centralized(exp, budget, exp.config.federation.rounds)
    return {
        "metrics": {**final_metrics(curve), "train_examples": budget},
        "curve": curve,
    }


def _full_finetune(
    exp: Experiment,
    fed: FederatedResult,
    run_dir: Path,
    emit: EventCallback,
    resume: bool,
) -> dict[str, Any]:
    """FedAvg of the whole model (the non-private reference point)."""
    cfg = exp.config
    client_cfg = cfg.client.model_copy(update={"lr": cfg.client.full_lr})
    strategy_cfg = strategy_config(
        "fedavg",
        fraction_fit=cfg.strategy.fraction_fit,
        min_fit_clients=cfg.strategy.min_fit_clients,
    )
    result = FederatedRun(
        exp,
        method="full",
        client_cfg=client_cfg,
        strategy_cfg=strategy_cfg,
        run_dir=run_dir / "full-finetune",
        label="full-finetune",
        private=False,
        on_round=lambda r: emit("round", r),
    ).run(resume)
    keys = ("run", "round", "test_accuracy", "test_macro_f1", "bytes_up", "bytes_down")
    curve = [{k: r[k] for k in keys if k in r} for r in result.history]
    metrics = {
        **final_metrics(result.history),
        "bytes_up_total": result.totals["bytes_up"],
        "bytes_down_total": result.totals["bytes_down"],
        "client_flops_total": result.totals["client_flops"],
    }
    return {"metrics": metrics, "curve": curve}


def _metrics_only(
    run: Callable[[Experiment], dict[str, Any]],
) -> BaselineRun:
    def baseline(
        exp: Experiment,
        fed: FederatedResult,
        run_dir: Path,
        emit: EventCallback,
        resume: bool,
    ) -> dict[str, Any]:
        return {"metrics": run(exp)}

    return baseline


BASELINE_RUNS: dict[str, BaselineRun] = {
    "centralized": _centralized,
    "full-finetune": _full_finetune,
    "linear-probe": _metrics_only(run_linear_probe),
    "zero-shot": _metrics_only(run_zero_shot),
    "local-only": _metrics_only(run_local_only),
}
"""Every baseline of ``baselines.run`` (config.BASELINES) by name."""
