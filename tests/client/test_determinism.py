"""Same config and seed, same trained states, bit for bit, with torch's default
threads: client-batched training run in two fresh processes agrees exactly.

Thread settings are process-wide, so each run gets its own interpreter with
the thread variables unset (torch then takes one intra-op thread per core).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]

# One round of local training of the default method (prompt, 20 virtual
# tokens) with the default bucketing (16 per bucket, 2 threads). A bucket's
# gathered prompts, (16, 20, 384) = 122,880 values, are above the size at
# which torch splits an accumulating backward across its threads: with the
# old gather, stacked[rows], two runs' states differed in their last bits.
# (The other methods gather their copies through the same function.)
SCRIPT = """
import hashlib, json, sys
import torch
from fedpeft.client.batched import ClientJob, train_clients_batched
from fedpeft.experiment import build_experiment
from fedpeft.seeding import stream
from tests.conftest import tiny_config

cfg = tiny_config(sys.argv[1], "peft.prompt_length=20")
exp = build_experiment(cfg)
fed = cfg.federation
model = exp.new_adapter()
jobs = [
    ClientJob(k, model.trainable_state(), exp.clients[k].train,
              stream(cfg.seed, "client", 1, k))
    for k in range(fed.num_clients)
]
trained = train_clients_batched(
    model, jobs, cfg.client, bucket_size=fed.bucket_size,
    bucket_threads=fed.bucket_threads,
)
digest = hashlib.sha256()
for state, stats in trained:
    for name in sorted(state):
        digest.update(name.encode())
        digest.update(state[name].tobytes())
    digest.update(repr(stats.loss).encode())
print(json.dumps({"threads": torch.get_num_threads(), "states": digest.hexdigest()}))
"""

THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def _start_run(run_dir: Path) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if k not in THREAD_VARIABLES}
    env["HF_HUB_OFFLINE"] = "1"
    return subprocess.Popen(
        [sys.executable, "-c", SCRIPT, str(run_dir)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _result(proc: subprocess.Popen[str]) -> dict[str, object]:
    stdout, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 0, stderr[-3000:]
    result: dict[str, object] = json.loads(stdout.strip().splitlines()[-1])
    return result


@pytest.mark.skipif(
    len(os.sched_getaffinity(0)) < 2,
    reason="one core: torch runs one intra-op thread, nothing to race",
)
def test_batched_training_is_bitwise_reproducible_with_default_threads(
    tmp_path: Path,
) -> None:
    # Both runs at once: they share the cores, as competing work would.
    procs = [_start_run(tmp_path / f"run{i}") for i in range(2)]
    first, second = (_result(p) for p in procs)

    assert first["threads"] == second["threads"]
    if first["threads"] == 1:
        pytest.skip("torch took one intra-op thread: nothing to race")
    assert first["states"] == second["states"]
