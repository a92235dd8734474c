"""Flower ServerApp: the round loop, server algorithm and privacy of an
embedded run, with clients on SuperNodes.

The run configuration comes from a fedpeft TOML file named in the Flower run
config (``fedpeft-config``); every node worker is started from the same file
and refuses a server whose configuration differs
(:func:`fedpeft.remote.node.config_digest`). The run directory, metrics,
checkpoints, summary and adapter are the same as ``fedpeft run`` writes;
``fedpeft-resume = true`` continues after the last checkpoint (a restarted
server loses no finished round). ``fedpeft-node-data = true`` says the data
holders train on files of their own (``fedpeft node --data``): the server then
takes each client's n_k from its node, and the run's corpus serves only for
the label set and the server's test set.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from fedpeft.config import ConfigError, RunConfig, load_config
from fedpeft.engine.runner import run_experiment
from fedpeft.engine.simulation import FederatedRun
from fedpeft.experiment import Experiment
from fedpeft.flower.latency import shorten_serverapp_waits
from fedpeft.flower.transport import FlowerTransport
from fedpeft.remote.node import config_digest
from fedpeft.remote.runtime import RemoteRuntime
from fedpeft.remote.secure_sum import RemoteSum
from fedpeft.rundir.files import write_atomic
from fedpeft.secagg import SecAggConfig
from fedpeft.server.aggregators import SecureSum

logger = logging.getLogger(__name__)

CONFIG = "fedpeft-config"
RESUME = "fedpeft-resume"
OVERWRITE = "fedpeft-overwrite"
TIMEOUT = "fedpeft-timeout"
NODES = "fedpeft-nodes"
NODE_DATA = "fedpeft-node-data"

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    rc = context.run_config
    if CONFIG not in rc:
        raise ConfigError(
            f"the Flower run config has no {CONFIG!r}; pass --run-config "
            f"\"{CONFIG}='/path/to/run.toml'\" (fedpeft deploy does)"
        )
    cfg = load_config(Path(str(rc[CONFIG])), [])
    shorten_serverapp_waits()
    serve(
        grid,
        cfg,
        resume=bool(rc.get(RESUME, False)),
        overwrite=bool(rc.get(OVERWRITE, False)),
        timeout=float(rc.get(TIMEOUT, 120.0)),
        nodes=int(rc.get(NODES, cfg.federation.num_clients)),
        node_data=bool(rc.get(NODE_DATA, False)),
    )


def check_flower_config(cfg: RunConfig) -> None:
    """What a run on Flower supports.

    Raises:
        ConfigError: naming the setting to change.
    """
    if cfg.federation.eval_clients:
        raise ConfigError(
            "federation.eval_clients = true evaluates on every client's validation "
            "split, which the server of a real federation does not hold; set "
            "federation.eval_clients = false for Flower"
        )
    if cfg.baselines.run:
        raise ConfigError(
            f"baselines.run = {list(cfg.baselines.run)} trains on the pooled client "
            "data, which the server of a real federation does not hold; set "
            "baselines.run = [] for Flower (run them with `fedpeft run`)"
        )
    if cfg.fedsp.enabled:
        raise ConfigError(
            "fedsp.enabled does not run on Flower yet: a node builds its client "
            "from the run config and would load the full model, which FedSP keeps "
            "from clients; run FedSP in the embedded engine (fedpeft run)"
        )
    if cfg.devices.profiles is not None:
        raise ConfigError(
            "devices.profiles (mixed-size LoRA) does not run on Flower yet; unset it"
        )
    if cfg.attack.kind == "alie":
        raise ConfigError(
            "attack.kind = 'alie' needs the round's attackers to collude (they "
            "send the mean - z std of their honest updates), and a Flower node "
            "trains only its own client; run ALIE in the embedded engine "
            "(fedpeft run)"
        )


def serve(
    grid: Grid,
    cfg: RunConfig,
    *,
    resume: bool = False,
    overwrite: bool = False,
    timeout: float = 120.0,
    nodes: int = 0,
    node_data: bool = False,
) -> dict[str, Any]:
    """Run the experiment of ``cfg`` with its clients on the grid's nodes;
    returns the summary (also written to the run directory). ``node_data``:
    the nodes hold files of their own (module docstring)."""
    check_flower_config(cfg)

    def federated(
        exp: Experiment, run_dir: Path, on_round: Callable[[dict[str, Any]], None]
    ) -> FederatedRun:
        transport = FlowerTransport(grid, timeout, expected=nodes)
        sums: list[RemoteSum] = []

        def secure_sum(config: SecAggConfig, seed: int) -> SecureSum:
            sums.append(RemoteSum(config, seed, exchange=transport.exchange))
            return sums[-1]

        runtime = RemoteRuntime(transport)
        expected = [None if node_data else len(c.train) for c in exp.clients]
        sizes = runtime.connect(config_digest(exp.config), expected)
        run = FederatedRun(
            exp,
            run_dir=run_dir,
            on_round=on_round,
            runtime=lambda _: runtime,
            secure_sum=secure_sum,
            client_sizes=sizes if node_data else None,
        )
        runtime.secure = sums[0] if sums else None
        runtime.lookahead = run.loop.next_merge
        if node_data:
            write_node_sizes(run_dir, sizes)
        return run

    def log_round(kind: str, record: dict[str, Any]) -> None:
        if kind == "round":
            logger.info(
                "round %s: test accuracy %.4f, %d clients",
                record.get("round"),
                record.get("test_accuracy", float("nan")),
                len(record.get("accepted_clients", record.get("clients", []))),
            )

    summary = run_experiment(
        cfg, resume=resume, overwrite=overwrite, on_event=log_round, federated=federated
    )
    if node_data:  # the run's partition settings did not make the shards
        summary.update(partition="node-data", alpha=None)
        write_atomic(cfg.run_dir / "summary.json", json.dumps(summary, indent=2))
    return summary


def write_node_sizes(run_dir: Path, sizes: list[int]) -> None:
    """partition.json for clients with data of their own: the n_k their nodes
    reported (the server knows nothing else of their data); the partition
    plot of the run's own corpus does not describe them and is removed."""
    report = {
        "method": "node-data",
        "clients": [{"client": k, "train": n} for k, n in enumerate(sizes)],
    }
    write_atomic(run_dir / "partition.json", json.dumps(report, indent=1))
    (run_dir / "plots" / "partition.png").unlink(missing_ok=True)
