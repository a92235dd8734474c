"""Distillation on real text, model privacy over a client's tensors, and a
FedSP run through the round loop (the shipped MiniLM-L6)."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from fedpeft.config import ConfigError
from fedpeft.engine.simulation import FederatedRun
from fedpeft.experiment import build_experiment, check_names
from fedpeft.fedsp.auxiliary import build_auxiliary, layer_list, layer_plan
from fedpeft.fedsp.client import ModelStageClient
from fedpeft.fedsp.config import FedSPSection
from fedpeft.fedsp.distill import DistillSettings, distill
from fedpeft.fedsp.recipe import server_texts
from fedpeft.fedsp.server import SteppedServer
from fedpeft.fedsp.store import save_auxiliary
from fedpeft.models.loading import load_backbone
from tests.conftest import tiny_config

FEDSP = (
    "peft.method=prefix",
    "peft.prefix_length=4",
    "fedsp.enabled=true",
    "fedsp.distill_steps=3",
    "fedsp.distill_texts=32",
    "fedsp.distill_batch=4",
)


def test_distillation_lowers_the_heldout_hidden_state_error() -> None:
    teacher = load_backbone("minilm-l6")
    plan = layer_plan(teacher.num_layers, depth=2)
    student = build_auxiliary(teacher, plan)
    section = FedSPSection(distill_texts=64)
    train, heldout = server_texts(section, teacher, 32, seed=0)
    frozen = {id(p): p.clone() for p in teacher.model.parameters()}
    log = distill(
        teacher,
        student,
        plan,
        train,
        DistillSettings(steps=12, batch_size=8, lr=1e-3),
        np.random.default_rng(0),
        heldout.subset(np.arange(32)),
    )
    assert log.heldout_after < 0.8 * log.heldout_before
    for p in teacher.model.parameters():  # the teacher never moves
        assert torch.equal(p, frozen[id(p)])
    assert not any(p.requires_grad for p in student.model.parameters())


CLIENT = r"""
import gc, hashlib, json, sys, torch
from fedpeft.models.loading import load_backbone
from fedpeft.models.tokenized import tokenize
from fedpeft.peft.prefix.model import PrefixClassifier
import numpy as np

aux = load_backbone(sys.argv[1])
model = PrefixClassifier(aux, 2, generator=torch.Generator().manual_seed(0),
                         prefix_length=4)
data = tokenize(aux, ["a fine film", "a dull film"], np.array([0, 1]), 16)
loss = torch.nn.functional.cross_entropy(model(data.batch(np.arange(2))),
                                         torch.tensor([0, 1]))
loss.backward()
seen = set()
for obj in gc.get_objects():
    if isinstance(obj, torch.Tensor) and obj.numel() >= 4096:
        t = obj.detach().float().contiguous().cpu()
        seen.add(hashlib.sha256(t.numpy().tobytes()).hexdigest())
print(json.dumps(sorted(seen)))
"""


def _digest(t: torch.Tensor) -> str:
    data = t.detach().float().contiguous().cpu().numpy().tobytes()
    return hashlib.sha256(data).hexdigest()


def test_a_client_process_holds_no_full_model_tensor_beyond_the_auxiliary(
    tmp_path: Path,
) -> None:
    full = load_backbone("minilm-l6")
    plan = layer_plan(full.num_layers, depth=2)  # shares layer 0's weights
    aux = build_auxiliary(full, plan)
    directory = save_auxiliary(aux, tmp_path / "aux", {})
    out = subprocess.run(
        [sys.executable, "-c", CLIENT, str(directory)],
        capture_output=True,
        text=True,
        check=True,
        env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"},
    )
    held = set(json.loads(out.stdout.strip().splitlines()[-1]))
    shipped = {_digest(t) for t in aux.model.state_dict().values() if t.numel() >= 4096}
    private = {
        _digest(p)
        for layer in list(layer_list(full.model))[1:]  # layers 1..5: never shipped
        for p in layer.parameters()
        if p.numel() >= 4096
    }
    assert private and not (private & shipped)
    assert not (held & private), "a client holds a full-model layer it was not sent"
    assert shipped <= held  # the scan does see the model the client was sent


def test_fedsp_settings_that_cannot_work_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"peft\.method = 'prefix'"):
        check_names(tiny_config(tmp_path, "peft.method=lora", "fedsp.enabled=true"))
    with pytest.raises(ConfigError, match="clients' corpus"):
        check_names(tiny_config(tmp_path, *FEDSP, "fedsp.distill_corpus=bbc-news"))


def test_a_fedsp_run_trains_on_the_auxiliary_model_and_serves_the_full_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FEDPEFT_CACHE", str(tmp_path / "cache"))
    cfg = tiny_config(tmp_path, *FEDSP, "fedsp.depth=2", "federation.rounds=1")
    exp = build_experiment(cfg)
    progress: list[int] = []
    run = FederatedRun(exp, on_progress=lambda _n, done, _t: progress.append(done))
    assert progress == [1, 2, 3]
    assert run.auxiliary is not None and run.auxiliary.backbone.num_layers == 2
    client_model = run.client.model_for(None)
    assert client_model.backbone is run.auxiliary.backbone
    assert run.model.backbone is exp.backbone
    result = run.run()
    first, last = result.history
    shipped = run.auxiliary.shipped_bytes
    assert first["model_bytes_down"] == shipped * 4 and shipped > 1_000_000
    assert 0.0 <= last["auxiliary_test_accuracy"] <= 1.0
    assert last["bytes_up_per_client"] < 0.001 * shipped  # only prompts travel
    # the server's state is what clients train: same keys and shapes
    state = run.model.trainable_state()
    assert {k: v.shape for k, v in state.items()} == {
        k: v.shape for k, v in client_model.trainable_state().items()
    }
    # a second run finds the cached model instead of distilling again
    progress.clear()
    again = FederatedRun(exp, on_progress=lambda _n, d, _t: progress.append(d))
    assert progress == [] and again.auxiliary is not None
    assert again.auxiliary.directory == run.auxiliary.directory


def fedsp_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *extra: str
) -> FederatedRun:
    """A tiny FedSP run (2-layer auxiliary model, every client each round),
    its auxiliary model cached under ``tmp_path``."""
    monkeypatch.setenv("FEDPEFT_CACHE", str(tmp_path / "cache"))
    cfg = tiny_config(
        tmp_path, *FEDSP, "fedsp.depth=2", "strategy.fraction_fit=1.0", *extra
    )
    return FederatedRun(build_experiment(cfg))


def test_the_server_step_trains_on_its_own_shard_with_the_full_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = fedsp_run(
        tmp_path, monkeypatch, "fedsp.server_steps=2", "federation.rounds=1"
    )
    result = run.run()
    last = result.history[-1]
    assert sorted(last["clients"]) == [0, 1, 2]  # client 3's shard is the server's
    assert np.isfinite(last["server_step_loss"]) and last["server_step_flops"] > 0
    # the step itself: the full-model adapter moves away from the given state
    server = run.loop.server
    assert isinstance(server, SteppedServer)
    stepped, _ = server.step(2, result.params)
    assert any(not np.array_equal(stepped[k], result.params[k]) for k in result.params)


def test_the_model_stage_keeps_each_clients_weights_local(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = fedsp_run(tmp_path, monkeypatch, "fedsp.model_steps=2", "federation.rounds=2")
    stage = run.algorithm
    assert isinstance(stage, ModelStageClient)
    shipped = [p.clone() for p in stage.weights]
    result = run.run()
    assert all(
        np.isfinite(r["local_model_stage_loss_mean"]) for r in result.history[1:]
    )
    # the shared model is back to what was shipped; each client kept its own
    for p, q in zip(stage.weights, shipped, strict=True):
        assert torch.equal(p, q)
    assert sorted(stage._own) == [0, 1, 2, 3]
    own = [stage._own[k][0] for k in range(4)]
    assert not torch.equal(own[0], shipped[0]) and not torch.equal(own[0], own[1])
    # nothing of the model stage travels: updates hold the prompt state only
    assert set(result.params) == set(run.model.trainable_state())


def test_flower_refuses_fedsp_until_nodes_can_run_without_the_full_model(
    tmp_path: Path,
) -> None:
    pytest.importorskip("flwr")
    from fedpeft.flower.server_app import check_flower_config

    with pytest.raises(ConfigError, match="would load the full model"):
        check_flower_config(
            tiny_config(tmp_path, *FEDSP, "federation.eval_clients=false")
        )


def test_fedsp_prompts_aggregate_under_secure_aggregation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plain = fedsp_run(tmp_path, monkeypatch, "federation.rounds=1").run()
    secure = fedsp_run(
        tmp_path, monkeypatch, "federation.rounds=1", "privacy.secagg=true"
    ).run()
    assert secure.history[-1]["secagg_passes"] >= 1
    for key, value in plain.params.items():  # the same mean, up to quantization
        np.testing.assert_allclose(secure.params[key], value, atol=1e-4)
