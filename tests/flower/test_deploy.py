"""A real Flower federation on 127.0.0.1: SuperLink, three SuperNodes and their
node workers as separate processes, two rounds with secure aggregation, and
one client's process dying in the middle of round 1's secure sum."""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from fedpeft.client.algorithm import GradientClient
from fedpeft.engine.embedded import EmbeddedRuntime
from fedpeft.engine.simulation import FederatedRun
from fedpeft.experiment import build_experiment
from fedpeft.flower.deploy import LoopbackFederation
from fedpeft.messages import Instruction
from fedpeft.rundir.checkpoint import load_checkpoint
from fedpeft.types import ClientUpdate
from tests.conftest import TINY_BLACKBOX, tiny_config

SETTINGS = (
    "federation.num_clients=3",
    "federation.rounds=2",
    "federation.batch_clients=false",
    "federation.eval_clients=false",
    "strategy.fraction_fit=1.0",
    "privacy.secagg=true",
    "baselines.run=[]",
)


class _Vanishing(GradientClient):
    """Client 2 answers nothing from round 1 on (the embedded reference)."""

    def fit(self, ins: Instruction) -> ClientUpdate:
        if ins.client_id == 2:
            raise RuntimeError("client 2 vanished")
        return super().fit(ins)


def _vanishing(client: GradientClient) -> EmbeddedRuntime:
    fields = {f.name: getattr(client, f.name) for f in dataclasses.fields(client)}
    return EmbeddedRuntime(_Vanishing(**fields), batch=False)


def _alive(pids: Sequence[int]) -> list[int]:
    out = []
    for pid in pids:
        try:
            os.killpg(pid, 0)
        except ProcessLookupError:
            continue
        out.append(pid)
    return out


def test_loopback_federation_survives_a_client_dying_mid_round(
    tmp_path: object,
) -> None:
    """Every process is a real one; the run is bounded by ``wall_limit``."""
    cfg = tiny_config(tmp_path, *SETTINGS)
    fed = LoopbackFederation(cfg, worker_args={2: ["--exit-at", "1:task"]})
    with fed:
        failure = fed.run(timeout=15.0, wall_limit=420.0)
        pids = [p.pid for p in fed.procs.values()]
        assert failure == "", failure
    assert _alive(pids) == [], "processes left behind"

    records = [json.loads(line) for line in (cfg.run_dir / "metrics.jsonl").open()]
    assert [r["round"] for r in records] == [0, 1, 2]
    assert records[1]["secagg_passes"] == 1
    # client 2 shared its keys ahead (with the warm start's last sum), then
    # died in training: its masks are rebuilt from its shares
    assert records[1]["secagg_dropped"] == 1
    assert records[1]["failed_clients"] == [2]
    assert records[2]["failed_clients"] == [2]
    final = load_checkpoint(cfg.run_dir / "checkpoint").params

    # the same run in one process, client 2 gone after the warm start
    reference = FederatedRun(build_experiment(cfg), runtime=_vanishing).run().params
    assert final.keys() == reference.keys()
    worst = max(float(np.abs(final[k] - reference[k]).max()) for k in final)
    assert worst < 1e-4, worst


def test_node_authentication_and_data_files_of_their_own(tmp_path: Path) -> None:
    """``auth``: registered SuperNodes run the federation; a SuperNode signing
    in with a key the SuperLink never registered is refused (Flower's exit 305).
    The two data holders train on CSV files of their own (``fedpeft node
    --data``): the server takes their n_k from them."""
    from fedpeft.data import load_corpus
    from fedpeft.flower.certificates import node_key_pair

    cfg = tiny_config(
        tmp_path,
        "federation.num_clients=2",
        "federation.rounds=1",
        *SETTINGS[2:5],
        "baselines.run=[]",
    )
    own = load_corpus("bbc-news", max_train=60, split_seed=7).train
    files = {}
    for k, rows in enumerate((range(0, 25), range(25, 60))):
        files[k] = tmp_path / f"holder{k}.csv"
        with files[k].open("w", newline="") as out:
            writer = csv.writer(out)
            writer.writerow(["text", "label"])
            for i in rows:
                writer.writerow([own.texts[i], own.label_names[own.labels[i]]])
    with LoopbackFederation(cfg, auth=True, data=files) as fed:
        assert fed.tls
        assert fed.run(timeout=30.0, wall_limit=240.0) == ""
        intruder, _ = node_key_pair(fed.keys, "intruder")
        fed.kill("supernode0")
        fed.start_supernode(0, key=intruder)
        assert fed.procs["supernode0"].wait(60) != 0
        log = (fed.logs / "supernode0.log").read_text(errors="replace")
        assert "Failed to activate SuperNode" in log
    records = [json.loads(line) for line in (cfg.run_dir / "metrics.jsonl").open()]
    assert [r["round"] for r in records] == [0, 1]
    report = json.loads((cfg.run_dir / "partition.json").read_text())
    val = cfg.partition.val_fraction  # each holder's validation part
    assert report["method"] == "node-data"
    assert [c["train"] for c in report["clients"]] == [
        n - max(1, round(val * n)) for n in (25, 35)
    ]
    summary = json.loads((cfg.run_dir / "summary.json").read_text())
    assert summary["partition"] == "node-data"


def test_black_box_clients_federate_over_flower(tmp_path: Path) -> None:
    """Gradient-free clients behind real Flower processes: z up, and z, σ and
    the diagonal covariance's scales down, give the in-process run's state."""
    cfg = tiny_config(
        tmp_path,
        "federation.num_clients=2",
        "federation.rounds=2",
        *SETTINGS[2:5],
        "baselines.run=[]",
        *TINY_BLACKBOX,
    )
    with LoopbackFederation(cfg) as fed:
        assert fed.run(timeout=30.0, wall_limit=300.0) == ""
    records = [json.loads(line) for line in (cfg.run_dir / "metrics.jsonl").open()]
    assert [r["round"] for r in records] == [0, 1, 2]
    assert records[2]["search_stds_max"] > records[2]["search_stds_min"]
    assert records[2]["bytes_down_per_client"] > records[2]["bytes_up_per_client"]
    saved = load_checkpoint(cfg.run_dir / "checkpoint")
    threads = torch.get_num_threads()
    # each node worker computes with cores // nodes threads (deploy.py)
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // 2))
    try:
        run = FederatedRun(build_experiment(cfg))
        reference = run.run().params
    finally:
        torch.set_num_threads(threads)
    assert saved.params.keys() == reference.keys()
    for name, value in reference.items():
        np.testing.assert_array_equal(saved.params[name], value)
    server_state = run.loop.server.state_dict()
    np.testing.assert_array_equal(
        saved.strategy_state["search.stds"], server_state["search.stds"]
    )


# A user's `fedpeft deploy` killed with SIGKILL while its federation is up:
# no `with` block ends, no cleanup code runs.
DEPLOYER = """
import json, sys, time
from tests.conftest import tiny_config
from fedpeft.flower.deploy import LoopbackFederation
fed = LoopbackFederation(tiny_config(sys.argv[1], "federation.num_clients=3"))
fed.start()
print(json.dumps([p.pid for p in fed.procs.values()]), flush=True)
time.sleep(600)
"""


def test_a_killed_deployer_leaves_no_federation_process_behind(
    tmp_path: Path,
) -> None:
    deployer = subprocess.Popen(
        [sys.executable, "-c", DEPLOYER, str(tmp_path)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).parents[2],
    )
    try:
        assert deployer.stdout is not None
        pids = json.loads(deployer.stdout.readline())
        assert len(pids) == 7  # SuperLink, 3 SuperNodes, 3 node workers
        assert _alive(pids) == pids
        deployer.send_signal(signal.SIGKILL)
        deployer.wait()
        deadline = time.monotonic() + 30.0
        while _alive(pids) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _alive(pids) == [], "processes left behind"
    finally:
        deployer.kill()
        deployer.wait()
