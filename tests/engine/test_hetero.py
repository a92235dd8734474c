"""Federated LoRA with per-client sizes: fedpeft.server.mixed_lora in the round loop."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fedpeft.aggregation.lora import lora_pairs, lora_products
from fedpeft.aggregation.mean import weighted_mean
from fedpeft.engine.simulation import FederatedRun
from fedpeft.experiment import Experiment
from fedpeft.server.mixed_lora import LoraSize, MixedLoraServer
from fedpeft.types import ClientUpdate, Params

TOP = "body.encoder.layer.5.attention.self.query"
LOW = "body.encoder.layer.0.attention.self.query"


class HeteroLoraRun:
    """The mixed-size run's server algorithm and round-0 state, for the tests."""

    def __init__(
        self, exp: Experiment, sizes: list[LoraSize | None] | list[LoraSize], rule: str
    ) -> None:
        self.run = FederatedRun(exp, sizes=sizes, rule=rule)
        server = self.run.loop.server
        assert isinstance(server, MixedLoraServer)
        self.server = server
        self.rule, self.alpha, self.initial = rule, server.alpha, server.initial
        self.client_state = server.client_state
        self.aggregate = server.aggregate

    def _start(self) -> Params:
        return self.run.loop.initial

    def run_round(self, rnd: int, params: Params) -> tuple[Params, dict]:  # type: ignore[type-arg]
        return self.run.run_round(rnd, params)


def _trained(run: HeteroLoraRun, size: LoraSize, seed: int) -> Params:
    """A client state of ``size`` with random (trained-looking) values."""
    rng = np.random.default_rng(seed)
    state = run.client_state(run._start(), size)
    if run.rule == "ffa":  # A is frozen and travels nowhere; the server adds it
        state.update(run.server.frozen_a(size))
    return {
        k: v
        if (run.rule == "ffa" and "lora_A" in k)
        else (v + rng.normal(size=v.shape)).astype(np.float32)
        for k, v in state.items()
    }


def test_rejects_bad_arguments(tiny_experiment: Experiment) -> None:
    n = len(tiny_experiment.clients)
    with pytest.raises(ValueError, match="rule='flora'"):
        HeteroLoraRun(tiny_experiment, [LoraSize(2)] * n, "flora")
    with pytest.raises(ValueError, match="one LoraSize"):
        HeteroLoraRun(tiny_experiment, [LoraSize(2)], "hetlora")
    with pytest.raises(ValueError, match="every client is excluded"):
        HeteroLoraRun(tiny_experiment, [None] * n, "hetlora")
    with pytest.raises(ValueError, match="only 6 layers"):
        HeteroLoraRun(tiny_experiment, [LoraSize(2, 7)] * n, "hetlora")
    with pytest.raises(ValueError, match="rank >= 1"):
        LoraSize(0)


def test_equal_sizes_fedavg_is_the_plain_weighted_mean(
    tiny_experiment: Experiment,
) -> None:
    n = len(tiny_experiment.clients)
    run = HeteroLoraRun(tiny_experiment, [LoraSize(4)] * n, "fedavg")
    states = [_trained(run, LoraSize(4), s) for s in range(3)]
    merged = run.aggregate(
        run._start(), [(s, m) for s, m in zip(states, [5, 1, 2], strict=True)]
    )
    expected = weighted_mean(states, np.array([5, 1, 2]) / 8)
    for key in expected:
        np.testing.assert_allclose(merged[key], expected[key], rtol=1e-5, atol=1e-6)


def test_hetlora_merges_each_pair_over_its_holders_only(
    tiny_experiment: Experiment,
) -> None:
    n = len(tiny_experiment.clients)
    small, large = LoraSize(2, 1), LoraSize(4, 0)
    run = HeteroLoraRun(tiny_experiment, [small, large] * (n // 2), "hetlora")
    start = run._start()
    s_small, s_large = _trained(run, small, 1), _trained(run, large, 2)
    merged = run.aggregate(start, [(s_small, 10), (s_large, 30)])
    low_a = f"{LOW}.lora_A.default.weight"
    top_a, top_b = f"{TOP}.lora_A.default.weight", f"{TOP}.lora_B.default.weight"
    # Layer 0: only the large client holds it, so the merge is its state.
    np.testing.assert_allclose(merged[low_a], s_large[low_a], rtol=1e-6)
    # Layer 5: both hold components 0..1; component 2..3 only the large one.
    norms = []
    for s in (s_small, s_large):
        prods = lora_products(s, alpha=1.0)
        norms.append(np.sqrt(sum(float(np.sum(p * p)) for p in prods.values())))
    w = np.array([10 * norms[0], 30 * norms[1]])
    w /= w.sum()
    np.testing.assert_allclose(
        merged[top_a][:2],
        w[0] * s_small[top_a] + w[1] * s_large[top_a][:2],
        rtol=1e-5,
        atol=1e-6,
    )
    # rank-2 B columns move to the global rank's scaling s(2)/s(4) = 2
    np.testing.assert_allclose(
        merged[top_b][:, :2],
        w[0] * 2 * s_small[top_b] + w[1] * s_large[top_b][:, :2],
        rtol=1e-5,
        atol=1e-6,
    )
    np.testing.assert_allclose(merged[top_a][2:], w[1] * s_large[top_a][2:], rtol=1e-5)


def test_flexlora_keeps_the_holders_mean_product(tiny_experiment: Experiment) -> None:
    n = len(tiny_experiment.clients)
    small, large = LoraSize(2, 1), LoraSize(4, 0)
    run = HeteroLoraRun(tiny_experiment, [small, large] * (n // 2), "flexlora")
    s_small, s_large = _trained(run, small, 3), _trained(run, large, 4)
    merged = run.aggregate(run._start(), [(s_small, 1), (s_large, 3)])
    alpha = run.alpha
    p_small = lora_products(s_small, alpha=alpha)
    p_large = lora_products(s_large, alpha=alpha)
    top, low = f"{TOP}.lora_delta.default.weight", f"{LOW}.lora_delta.default.weight"
    np.testing.assert_allclose(
        merged[top], 0.25 * p_small[top] + 0.75 * p_large[top], rtol=1e-4, atol=1e-6
    )
    np.testing.assert_allclose(merged[low], p_large[low], rtol=1e-5, atol=1e-6)
    # A rank-4 client gets layer 0's product back exactly (one rank-4 holder)
    # and layer 5's mixed product (rank <= 6) as its best rank-4 approximation.
    client = lora_products(run.client_state(merged, large), alpha=alpha)
    np.testing.assert_allclose(client[low], merged[low], rtol=1e-3, atol=1e-4)
    u, sigma, vt = np.linalg.svd(merged[top].astype(np.float64))
    best = (u[:, :4] * sigma[:4]) @ vt[:4]
    np.testing.assert_allclose(client[top], best, rtol=1e-3, atol=1e-4)


def test_ffa_never_sends_or_changes_a(tiny_experiment: Experiment) -> None:
    n = len(tiny_experiment.clients)
    sizes = [LoraSize(2, 1), LoraSize(4, 0)] * (n // 2)
    run = HeteroLoraRun(tiny_experiment, sizes, "ffa")
    payload = run.client_state(run._start(), sizes[1])
    assert payload and not any("lora_A" in k for k in payload)
    state, record = run.run_round(1, run._start())
    for ka, _ in lora_pairs(run.initial).values():
        np.testing.assert_array_equal(state[ka], run.initial[ka])
    assert record["bytes_up"] > 0 and np.isfinite(record["test_accuracy"])


@pytest.mark.parametrize("rule", ["hetlora", "flexlora", "ffa"])
def test_a_round_is_deterministic_and_moves_the_adapter(
    tiny_experiment: Experiment, rule: str
) -> None:
    sizes: list[LoraSize | None] = [LoraSize(2, 1), LoraSize(4, 0), None, LoraSize(4)]
    first, record = HeteroLoraRun(tiny_experiment, sizes, rule).run_round(
        1, HeteroLoraRun(tiny_experiment, sizes, rule)._start()
    )
    again, _ = HeteroLoraRun(tiny_experiment, sizes, rule).run_round(
        1, HeteroLoraRun(tiny_experiment, sizes, rule)._start()
    )
    for key, value in first.items():
        np.testing.assert_array_equal(value, again[key])
    # LoRA starts at B = 0 (ΔW = 0); training must have moved it.
    moved = [k for k in first if "lora_B" in k or "lora_delta" in k]
    assert moved and any(np.abs(first[k]).max() > 0 for k in moved)
    assert record["clients"] and 2 not in record["clients"]


def test_excluded_clients_are_never_sampled_but_are_evaluated(
    tiny_experiment: Experiment,
) -> None:
    sizes: list[LoraSize | None] = [LoraSize(2, 1), None, None, LoraSize(4)]
    run = FederatedRun(tiny_experiment, sizes=sizes, rule="hetlora")
    for rnd in range(1, 30):
        assert set(run.loop.select(rnd)) <= {0, 3}
    result = run.run()
    assert len(result.history) == tiny_experiment.config.federation.rounds + 1
    held = [k for k, c in enumerate(tiny_experiment.clients) if len(c.val)]
    assert sorted(result.client_val_accuracy) == held and {1, 2} <= set(held)


class RunKilledError(Exception):
    pass


def test_a_killed_device_run_resumes_to_the_uninterrupted_result(
    tiny_experiment: Experiment, tmp_path: Path
) -> None:
    sizes: list[LoraSize | None] = [LoraSize(2, 1), LoraSize(4, 0), None, LoraSize(4)]

    def kill_after_round_1(record: dict) -> None:  # type: ignore[type-arg]
        if record["round"] == 1:
            raise RunKilledError

    straight = FederatedRun(
        tiny_experiment, run_dir=tmp_path / "a", sizes=sizes, rule="flexlora"
    ).run()
    with pytest.raises(RunKilledError):
        FederatedRun(
            tiny_experiment,
            run_dir=tmp_path / "b",
            sizes=sizes,
            rule="flexlora",
            on_round=kill_after_round_1,
        ).run()
    resumed = FederatedRun(
        tiny_experiment, run_dir=tmp_path / "b", sizes=sizes, rule="flexlora"
    ).run(resume=True)

    assert len(resumed.history) == len(straight.history) == 3
    for key, value in straight.params.items():
        np.testing.assert_array_equal(resumed.params[key], value)
    for a, b in zip(straight.history, resumed.history, strict=True):
        keep = [k for k in a if "seconds" not in k]
        assert {k: a[k] for k in keep} == {k: b[k] for k in keep}


@pytest.mark.parametrize("rule", ["hetlora", "fedavg", "ffa"])
def test_the_secure_merge_equals_the_plain_merge(
    tiny_experiment: Experiment, rule: str
) -> None:
    """Each rule as one secure sum of what each client computes alone
    (fedpeft.server.mixed_secure) gives the pure functions' merge."""
    from fedpeft.secagg import SecAggConfig
    from fedpeft.server.aggregators import SecureAggregator, SecureSum

    sizes: list[LoraSize | None] = [LoraSize(2, 1), LoraSize(4, 0), None, LoraSize(4)]
    run = HeteroLoraRun(tiny_experiment, sizes, rule)
    rng = np.random.default_rng(7)
    start = {  # a global state after some rounds: B no longer zero
        k: (v + 0.05 * rng.normal(size=v.shape) * ("lora_B" in k)).astype(np.float32)
        for k, v in run._start().items()
    }
    sent = run.server.instructions(1, "fit", start, [0, 1, 3])
    updates = [
        ClientUpdate(
            ins.client_id,
            {
                k: (0.02 * rng.normal(size=v.shape)).astype(np.float32)
                for k, v in ins.payload.items()
            },
            n,
        )
        for ins, n in zip(sent, [30, 10, 20], strict=True)
    ]
    plain, _ = run.server.merge(1, start, updates)
    config = SecAggConfig(clip_range=4.0, secure=False)
    run.server.aggregator = SecureAggregator(SecureSum(config, seed=0), 60)
    run.server.total_examples = 60
    secure, stats = run.server.merge(1, start, updates)

    assert stats["secagg_passes"] == 1
    assert plain.keys() == secure.keys()
    for key, value in plain.items():
        np.testing.assert_allclose(secure[key], value, rtol=1e-4, atol=1e-5)
    moved = [k for k in plain if not np.array_equal(plain[k], start[k])]
    assert any("lora_B" in k for k in moved) and any("head" in k for k in moved)


def test_a_device_run_under_secure_aggregation_tracks_the_plain_one(
    tiny_experiment: Experiment,
) -> None:
    import dataclasses

    sizes: list[LoraSize | None] = [LoraSize(2, 1), LoraSize(4, 0), None, LoraSize(4)]
    secure_cfg = tiny_experiment.config.model_copy(
        update={
            "privacy": tiny_experiment.config.privacy.model_copy(
                update={"secagg": True, "secagg_clip_range": 4.0}
            )
        }
    )
    plain = FederatedRun(tiny_experiment, sizes=sizes, rule="hetlora").run()
    secure = FederatedRun(
        dataclasses.replace(tiny_experiment, config=secure_cfg),
        sizes=sizes,
        rule="hetlora",
    ).run()

    assert all(r["secagg_passes"] == 1 for r in secure.history[1:])
    # The quantizer's ~1e-9 error grows through two rounds of training; on one
    # host 1 of 1,536 values of a LoRA matrix ended 4e-4 apart (values ~4e-2).
    for key, value in plain.params.items():
        np.testing.assert_allclose(secure.params[key], value, atol=1e-3)
