"""SCAFFOLD (Karimireddy et al. 2020, Alg. 1): the server's control variates on
hand-made replies, and the client's corrected steps and returned control
variate against a hand computation with torch's gradients."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fedpeft.client.flops import FlopMeter
from fedpeft.client.local import local_update
from fedpeft.client.scaffold import CONTROL
from fedpeft.config import ConfigError, load_config
from fedpeft.engine.simulation import FederatedRun
from fedpeft.experiment import Experiment
from fedpeft.models.tokenized import TokenizedDataset
from fedpeft.peft.base import AdapterClassifier
from fedpeft.seeding import stream
from fedpeft.server.aggregators import PlainAggregator
from fedpeft.server.scaffold import ScaffoldServer
from fedpeft.server.uniform import UniformServer
from fedpeft.strategies import FedAvg
from fedpeft.strategies.momentum import ServerMomentum
from fedpeft.types import ClientUpdate, Params

Arrays = dict[str, np.ndarray]
"""Named arrays of any float dtype (hand computations run in float64)."""

N = 4
LAYOUT: Params = {"w": np.zeros(3, np.float32), "b": np.zeros(1, np.float32)}


def _p(w: list[float], b: float) -> Params:
    return {"w": np.array(w, np.float32), "b": np.array([b], np.float32)}


def _reply(k: int, n: int, delta: Params, control: Params) -> ClientUpdate:
    return ClientUpdate(
        k, {**delta, **{CONTROL + name: v for name, v in control.items()}}, n
    )


def _server(momentum: float = 0.0) -> ScaffoldServer:
    strategy = FedAvg() if momentum == 0 else ServerMomentum(FedAvg(), momentum)
    return ScaffoldServer(UniformServer(strategy, PlainAggregator(), N, 100), LAYOUT)


def _correction(server: ScaffoldServer, params: Params, k: int) -> Params:
    (ins,) = server.instructions(1, "fit", params, [k])
    assert {n: v for n, v in ins.payload.items() if not n.startswith(CONTROL)} == params
    return {
        n[len(CONTROL) :]: v for n, v in ins.payload.items() if n.startswith(CONTROL)
    }


def _assert_params(got: Arrays, expected: Arrays) -> None:
    assert got.keys() == expected.keys()
    for k in expected:
        np.testing.assert_allclose(got[k], expected[k], rtol=1e-6, atol=1e-7)


# Two rounds of hand-made replies (controls a_k in round 1, b_k in round 2).
A0, A2 = _p([1.0, -2.0, 0.5], 4.0), _p([3.0, 0.0, -0.5], -2.0)
B0, B1 = _p([0.0, 1.0, 1.0], 1.0), _p([-4.0, 2.0, 0.0], 0.5)
D0, D2 = _p([0.1, 0.2, 0.3], 0.0), _p([-0.1, 0.0, 0.1], 1.0)


def test_controls_follow_the_update_rule_for_a_subset_of_clients() -> None:
    server = _server()
    params = {k: v.copy() for k, v in LAYOUT.items()}
    # Round 1: c = c_k = 0, so every correction is 0.
    for k in range(N):
        _assert_params(_correction(server, params, k), _p([0, 0, 0], 0))
    new, metrics = server.merge(
        1, params, [_reply(0, 10, D0, A0), _reply(2, 30, D2, A2)]
    )
    # The model merge sees only ΔP: FedAvg with weights 1/4, 3/4.
    _assert_params(new, {k: 0.25 * D0[k] + 0.75 * D2[k] for k in D0})
    # c = 0 + (1/N)(a0 − 0) + (1/N)(a2 − 0) = ((4, −2, 0), 2) / 4
    c1 = _p([1.0, -0.5, 0.0], 0.5)
    _assert_params(server.control, c1)
    assert sorted(server.client_controls) == [0, 2]
    norm = float(np.sqrt(1.0 + 0.25 + 0.25))
    assert metrics["scaffold_control_norm"] == pytest.approx(norm, rel=1e-6)
    # Round 2: each client is sent c − c_k.
    _assert_params(_correction(server, new, 0), _p([0.0, 1.5, -0.5], -3.5))  # c − a0
    _assert_params(_correction(server, new, 1), c1)  # c − 0
    _assert_params(_correction(server, new, 2), _p([-2.0, -0.5, 0.5], 2.5))  # c − a2
    server.merge(2, new, [_reply(0, 10, D0, B0), _reply(1, 10, D2, B1)])
    # c = c1 + (b0 − a0)/4 + (b1 − 0)/4
    #   = (1, −0.5, 0) + (−1, 3, 0.5)/4 + (−4, 2, 0)/4 = (−0.25, 0.75, 0.125);
    # b: 0.5 + (1 − 4)/4 + 0.5/4 = −0.125
    _assert_params(server.control, _p([-0.25, 0.75, 0.125], -0.125))
    _assert_params(server.client_controls[0], B0)
    _assert_params(server.client_controls[1], B1)
    _assert_params(server.client_controls[2], A2)  # not sampled: kept
    # c = (1/N) Σ_k c_k whenever every c_k started at 0
    mean = {k: (B0[k] + B1[k] + A2[k]) / N for k in LAYOUT}
    _assert_params(server.control, mean)


def test_warm_start_instructions_carry_no_control() -> None:
    server = _server()
    for task in ("probe", "class-stats"):
        (ins,) = server.instructions(0, task, dict(LAYOUT), [1])
        assert set(ins.payload) == set(LAYOUT)


@pytest.mark.parametrize(
    ("control", "message"),
    [
        ({}, "client 2's reply carries control tensors [], expected ['b', 'w']"),
        ({"w": np.zeros(3, np.float32)}, "client 2's reply carries control"),
        (
            {"w": np.zeros(4, np.float32), "b": np.zeros(1, np.float32)},
            "client 2's control tensor 'w' has shape (4,)",
        ),
        (
            {"w": np.array([0, np.nan, 0], np.float32), "b": np.zeros(1, np.float32)},
            "client 2's control tensor 'w'",
        ),
    ],
)
def test_bad_control_variates_raise_naming_the_client(
    control: Params, message: str
) -> None:
    server = _server()
    server.merge(1, dict(LAYOUT), [_reply(0, 10, D0, A0)])
    before = {k: v.copy() for k, v in server.control.items()}
    with pytest.raises(ValueError) as err:
        server.merge(
            2, dict(LAYOUT), [_reply(1, 10, D0, B1), _reply(2, 5, D2, control)]
        )
    assert message in str(err.value)
    # Nothing was applied: not even the valid client's control.
    _assert_params(server.control, before)
    assert sorted(server.client_controls) == [0]


def test_state_round_trip_continues_identically() -> None:
    first = _server(momentum=0.5)  # the wrapped strategy's state travels too
    params, _ = first.merge(
        1, dict(LAYOUT), [_reply(0, 10, D0, A0), _reply(2, 30, D2, A2)]
    )
    state = first.state_dict()
    assert {"scaffold/c/w", "scaffold/client/2/b", "momentum/w"} <= set(state)
    resumed = _server(momentum=0.5)
    resumed.load_state_dict(state)
    for k in range(N):
        _assert_params(_correction(resumed, params, k), _correction(first, params, k))
    replies = [_reply(0, 10, D0, B0), _reply(1, 10, D2, B1)]
    a, _ = first.merge(2, params, replies)
    b, _ = resumed.merge(2, params, replies)
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])
        np.testing.assert_array_equal(first.control[name], resumed.control[name])
    # Momentum is in the state: a server without it steps differently.
    fresh = _server(momentum=0.5)
    fresh.load_state_dict({k: v for k, v in state.items() if "momentum" not in k})
    c, _ = fresh.merge(2, params, replies)
    assert not np.allclose(c["w"], a["w"])


def test_a_checkpoint_without_control_variates_is_refused() -> None:
    with pytest.raises(ValueError, match=r"strategy\.scaffold = false"):
        _server().load_state_dict({})


@pytest.mark.parametrize(
    ("items", "fix"),
    [
        (
            ["privacy.secagg=true"],
            "set strategy.scaffold = false, or drop privacy.secagg",
        ),
        (
            ["privacy.client_dp={noise_multiplier=1.0}"],
            "drop privacy.secagg / client_dp",
        ),
        (
            ["devices.profiles=tiers", "peft.method=lora"],
            "unset devices.profiles or set strategy.scaffold = false",
        ),
    ],
)
def test_config_refuses_scaffold_where_it_cannot_run_naming_the_fix(
    items: list[str], fix: str
) -> None:
    load_config(None, items)  # fine without SCAFFOLD
    assert load_config(None, ["strategy.scaffold=true"]).strategy.scaffold
    with pytest.raises(ConfigError) as err:
        load_config(None, ["strategy.scaffold=true", *items])
    assert fix in str(err.value)


# ---------------------------------------------------------------- client side
METER = FlopMeter()  # one FLOP meter for the runs here: each shape counted once


def _grads(model: AdapterClassifier, params: Params, data: TokenizedDataset) -> Arrays:
    """∇ mean CE over all of ``data`` at ``params``, in float64."""
    model.load_trainable_state(params)
    tensors = model.trainable_parameters()
    batch = data.batch(np.arange(len(data)))
    loss = F.cross_entropy(model(batch), batch.labels)
    grads = torch.autograd.grad(loss, list(tensors.values()))
    model.zero_grad(set_to_none=True)
    return {n: g.double().numpy() for n, g in zip(tensors, grads, strict=True)}


@pytest.mark.slow
def test_client_steps_with_the_correction_and_returns_its_mean_raw_gradient(
    tiny_experiment: Experiment,
) -> None:
    """Two full-batch AdamW steps by hand: g_t is the raw gradient at P_t,
    the optimizer gets g_t + (c − c_k), and the client returns
    c_k⁺ = (g_0 + g_1)/2 with ΔP = P_2 − P_0."""
    exp = tiny_experiment
    model = exp.new_adapter()
    data = exp.clients[0].train.subset(np.arange(6))
    # One batch holds all 6 examples: every step is a full-batch step.
    cfg = exp.config.client.model_copy(
        update={"batch_size": 8, "local_steps": 2, "weight_decay": 0.0}
    )
    p0 = {k: v.astype(np.float64) for k, v in model.trainable_state().items()}
    rng = np.random.default_rng(0)
    corr = {k: 0.05 * rng.normal(size=v.shape) for k, v in p0.items()}
    lr = {k: cfg.head_lr if k.startswith("head.") else cfg.lr for k in p0}
    b1, b2, eps = 0.9, 0.999, 1e-8

    def f32(p: Arrays) -> Params:
        return {k: v.astype(np.float32) for k, v in p.items()}

    g0 = _grads(model, f32(p0), data)
    h0 = {k: g0[k] + corr[k] for k in p0}  # the corrected gradient
    m1 = {k: (1 - b1) * h0[k] for k in p0}
    v1 = {k: (1 - b2) * h0[k] ** 2 for k in p0}
    # AdamW step t: P -= lr/(1−β1^t) · m / (√v/√(1−β2^t) + ε)
    p1 = {
        k: p0[k] - lr[k] / (1 - b1) * m1[k] / (np.sqrt(v1[k] / (1 - b2)) + eps)
        for k in p0
    }
    g1 = _grads(model, f32(p1), data)
    h1 = {k: g1[k] + corr[k] for k in p0}
    m2 = {k: b1 * m1[k] + (1 - b1) * h1[k] for k in p0}
    v2 = {k: b2 * v1[k] + (1 - b2) * h1[k] ** 2 for k in p0}
    p2 = {
        k: p1[k] - lr[k] / (1 - b1**2) * m2[k] / (np.sqrt(v2[k] / (1 - b2**2)) + eps)
        for k in p0
    }

    def update(correction: Params | None) -> ClientUpdate:
        return local_update(
            0,
            model,
            f32(p0),
            data,
            exp.clients[0].val,
            cfg,
            stream(0, "client", 1, 0),
            correction=correction,
            flops=METER,
        )

    got = update(f32(corr))
    assert set(got.delta) == set(p0) | {CONTROL + k for k in p0}
    for k in p0:
        control = got.delta[CONTROL + k]
        expected = (g0[k] + g1[k]) / 2
        assert np.abs(expected).max() > 1e-5, k
        np.testing.assert_allclose(control, expected, rtol=1e-3, atol=1e-7, err_msg=k)
        np.testing.assert_allclose(
            got.delta[k], p2[k] - p0[k], rtol=1e-3, atol=1e-3 * lr[k], err_msg=k
        )
    # Without a correction the client takes other steps and returns no control.
    plain = update(None)
    assert set(plain.delta) == set(p0)
    assert any(np.abs(plain.delta[k] - got.delta[k]).max() > 0.1 * lr[k] for k in p0)
    # A zero correction steps exactly as none, and still returns c_k⁺.
    zero = update({k: np.zeros_like(v) for k, v in f32(p0).items()})
    for k in p0:
        np.testing.assert_array_equal(zero.delta[k], plain.delta[k])
        assert np.abs(zero.delta[CONTROL + k]).max() > 0


def _scaffold_run(
    exp: Experiment, run_dir: Path | None = None, **kw: object
) -> FederatedRun:
    cfg = exp.config
    cfg = cfg.model_copy(
        update={
            "client": cfg.client.model_copy(update={"batch_size": 8, "local_steps": 2}),
            "strategy": cfg.strategy.model_copy(update={"scaffold": True, **kw}),
            "federation": cfg.federation.model_copy(update={"rounds": 3}),
            "peft": cfg.peft.model_copy(update={"head_init": "random"}),
        }
    )
    run = FederatedRun(dataclasses.replace(exp, config=cfg), run_dir=run_dir)
    run.client.flops = METER
    return run


@pytest.mark.slow
def test_batched_clients_with_corrections_match_sequential_clients(
    tiny_experiment: Experiment,
) -> None:
    run = _scaffold_run(tiny_experiment)
    server = run.loop.server
    assert isinstance(server, ScaffoldServer)
    rng = np.random.default_rng(5)

    def noise() -> Params:
        return {
            k: (0.05 * rng.normal(size=v.shape)).astype(np.float32)
            for k, v in server.initial.items()
        }

    server.control = noise()
    server.client_controls = {0: noise(), 2: noise()}  # client 1 still at 0
    group = server.instructions(1, "fit", run.loop.initial, [0, 1, 2])
    batched = run.client.fit_many(group)
    sequential = [run.client.fit(ins) for ins in group]
    cfg = run.client.settings.client
    for b, s in zip(batched, sequential, strict=True):
        assert b.delta.keys() == s.delta.keys()
        assert {k for k in s.delta if k.startswith(CONTROL)}
        for name, expected in s.delta.items():
            if name.startswith(CONTROL):  # mean raw gradients
                np.testing.assert_allclose(
                    b.delta[name], expected, rtol=1e-3, atol=1e-6, err_msg=name
                )
            else:
                diff = np.abs(b.delta[name] - expected)
                assert diff.max() <= 0.05 * max(cfg.lr, cfg.head_lr), name


@pytest.mark.slow
def test_a_round_accepts_scaffold_replies_and_updates_c(
    tiny_experiment: Experiment,
) -> None:
    run = _scaffold_run(tiny_experiment)
    server = run.loop.server
    assert isinstance(server, ScaffoldServer)
    params, record = run.run_round(1, run.loop.initial)
    assert record["rejected_clients"] == [] and record["accepted_clients"]
    assert sorted(server.client_controls) == sorted(record["accepted_clients"])
    # From c = c_k = 0: c = (1/N) Σ_k c_k⁺.
    num_clients = len(run.experiment.clients)
    controls = list(server.client_controls.values())
    mean = {
        k: np.sum([c[k] for c in controls], axis=0) / num_clients
        for k in server.initial
    }
    _assert_params(server.control, mean)
    assert record["scaffold_control_norm"] > 0
    assert set(params) == set(server.initial)  # no control key leaks into P


@pytest.mark.slow
def test_scaffold_with_momentum_resumes_equal(
    tiny_experiment: Experiment, tmp_path: Path
) -> None:
    class KilledError(Exception):
        pass

    def stop_after_1(record: dict[str, object]) -> None:
        if record["round"] == 1:
            raise KilledError

    straight = _scaffold_run(tiny_experiment, tmp_path / "a", server_momentum=0.5).run()
    killed = _scaffold_run(tiny_experiment, tmp_path / "b", server_momentum=0.5)
    killed.on_round = stop_after_1
    killed.loop.on_round = stop_after_1
    with pytest.raises(KilledError):
        killed.run()
    resumed = _scaffold_run(tiny_experiment, tmp_path / "b", server_momentum=0.5)
    again = resumed.run(resume=True)
    for key, value in straight.params.items():
        np.testing.assert_array_equal(again.params[key], value)
    server = resumed.loop.server
    assert isinstance(server, ScaffoldServer) and server.client_controls
