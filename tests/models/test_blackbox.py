"""Black-box prompt tuning on the tiny decoder: the projection, the service
boundary, the CMA-ES client and the server's FedBPT rule."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import torch

from fedpeft.blackbox.client import BlackBoxClient
from fedpeft.blackbox.server import (
    SEARCH_STDS,
    BlackBoxServer,
    client_sigma,
    diagonal_step,
    rank_weights,
)
from fedpeft.blackbox.service import ModelService
from fedpeft.config import ConfigError, load_config
from fedpeft.messages import Instruction, reply_layout
from fedpeft.models.backbone import Backbone
from fedpeft.models.tokenized import TokenizedDataset
from fedpeft.peft import peft_config
from fedpeft.peft.base import build_adapter
from fedpeft.server.aggregators import PlainAggregator
from fedpeft.server.uniform import UniformServer
from fedpeft.strategies import build_strategy
from fedpeft.types import ClientUpdate
from fedpeft.wire import deserialize, serialize

LABELS = ("negative", "positive")


@dataclass
class Shard:
    train: TokenizedDataset
    val: TokenizedDataset


def shard(n: int = 12) -> Shard:
    rng = np.random.default_rng(0)
    lengths = rng.integers(2, 6, n)
    ids = np.zeros((n, 6), dtype=np.int32)
    for i, k in enumerate(lengths):
        ids[i, :k] = rng.integers(2, 7, k)
    data = TokenizedDataset(ids, lengths, np.arange(n) % 2)
    return Shard(data, data.subset(np.arange(2)))


def options(**extra: Any) -> Any:
    base = {"prompt_length": 3, "intrinsic_dim": 16, "popsize": 6, "iterations": 3}
    return peft_config(
        "blackbox", **{"search_batch": 8, "head": "verbalizer", **base, **extra}
    )


def client_for(decoder: Backbone, **extra: Any) -> BlackBoxClient:
    return BlackBoxClient(
        ModelService(decoder, "fp32"), lambda k: shard(), options(**extra), 0, LABELS
    )


def test_client_and_server_build_the_same_projection_from_the_seed(
    decoder: Backbone,
) -> None:
    adapter = build_adapter(
        options(), decoder, 2, torch.Generator().manual_seed(0), LABELS
    )
    client = client_for(decoder)
    assert torch.equal(client.projection, adapter.projection)
    other = client_for(decoder, projection_seed=1)
    assert not torch.equal(other.projection, adapter.projection)
    z = np.random.default_rng(1).standard_normal((2, 16)).astype(np.float32)
    expected = adapter.prompts(torch.from_numpy(z)).numpy()
    np.testing.assert_array_equal(client.prompts(z), expected)
    # with z ~ N(0, I) prompt entries have the word embeddings' scale
    table_std = float(decoder.word_embeddings.weight.std())
    big = client.prompts(np.random.default_rng(2).standard_normal((64, 16)))
    assert float(big.std()) == pytest.approx(table_std, rel=0.15)


def test_the_service_returns_numpy_only_and_bills_each_client(
    decoder: Backbone,
) -> None:
    service = ModelService(decoder, "fp32")
    public = {k: v for k, v in vars(service).items() if not k.startswith("_")}
    assert set(public) == {"hidden_size", "embedding_std", "kind"}
    assert not any(
        isinstance(v, torch.Tensor | torch.nn.Module) for v in public.values()
    )
    data = shard().train
    mask = (np.arange(6)[None] < data.lengths[:, None]).astype(np.int64)
    prompts = np.random.default_rng(0).standard_normal((3, 2, 32)).astype(np.float32)
    together = service.features(7, prompts, data.input_ids, mask)
    assert isinstance(together, np.ndarray) and together.shape == (3, 12, 32)
    one_by_one = np.stack(
        [
            service.features(7, prompts[p : p + 1], data.input_ids, mask)[0]
            for p in range(3)
        ]
    )
    np.testing.assert_allclose(together, one_by_one, rtol=1e-5, atol=1e-5)
    bill = service.usage(7)
    assert (bill.calls, bill.queries) == (4, 2 * 3 * 12)
    assert bill.tokens == 2 * 3 * (int(mask.sum()) + 12 * 2)
    assert service.usage(8).queries == 0
    logits = service.label_logits(7, prompts, data.input_ids, mask, LABELS)
    assert logits.shape == (3, 12, 2)
    with pytest.raises(ValueError, match=r"expected \(P, L, 32\)"):
        service.features(7, prompts[:, :, :8], data.input_ids, mask)
    with pytest.raises(ValueError, match="NaN"):
        service.features(
            7, np.full((1, 2, 32), np.nan, np.float32), data.input_ids, mask
        )


def test_a_black_box_client_searches_reproducibly_without_global_randomness(
    decoder: Backbone,
) -> None:
    adapter = build_adapter(
        options(), decoder, 2, torch.Generator().manual_seed(0), LABELS
    )
    ins = Instruction(3, 1, "fit", adapter.trainable_state(), {"sigma": 0.5})
    state = np.random.get_state()
    first = client_for(decoder).fit(ins)
    assert np.random.get_state()[1].tolist() == state[1].tolist()  # untouched
    again = client_for(decoder).fit(ins)
    np.testing.assert_array_equal(first.delta["z"], again.delta["z"])
    assert np.abs(first.delta["z"]).max() > 0
    assert set(first.delta) == {"z"}  # verbalizer: z is the whole state
    m = first.metrics
    assert m["sigma_sq_sum"] > 0 and m["search_mu"] == 3.0
    assert m["queries"] == 3 * 6 * 8 + 12  # 3 iterations × 6 × 8, then the shard


def test_fedbpt_rule_against_hand_values() -> None:
    w = rank_weights(2)  # population 4, parents 2: ln(2.5) − ln 1, ln(2.5) − ln 2
    raw = np.array([math.log(2.5), math.log(2.5) - math.log(2)])
    np.testing.assert_allclose(w, raw / raw.sum())
    ups = [
        ClientUpdate(
            0,
            {"z": np.ones(2)},
            10,
            {"sigma_sq_sum": 0.5, "search_mu": 3.0, "fitness": 0.9},
        ),
        ClientUpdate(
            1,
            {"z": -np.ones(2)},
            30,
            {"sigma_sq_sum": 0.7, "search_mu": 3.0, "fitness": 0.2},
        ),
    ]
    assert client_sigma(ups, 2) == pytest.approx(math.sqrt(1.2 / 6))


def uniform_server(clients: int = 2) -> UniformServer:
    strategy = build_strategy(load_config(None, []).strategy)
    return UniformServer(strategy, PlainAggregator(), clients)


def test_fedbpt_merge_ranks_by_fitness_and_averages_heads_by_size() -> None:
    inner = uniform_server()
    server = BlackBoxServer(inner, "fedbpt", 1.0)
    params = {"z": np.zeros(2, np.float32), "head.bias": np.zeros(2, np.float32)}
    metrics = {"sigma_sq_sum": 0.5, "search_mu": 3.0}
    ups = [
        ClientUpdate(
            0,
            {"z": np.ones(2), "head.bias": np.ones(2)},
            10,
            {**metrics, "fitness": 0.9},
        ),
        ClientUpdate(
            1,
            {"z": -np.ones(2), "head.bias": -np.ones(2)},
            30,
            {**metrics, "fitness": 0.2},
        ),
    ]
    merged, out = server.merge(1, params, ups)
    w = rank_weights(2)  # client 1 (lower loss) first
    np.testing.assert_allclose(merged["z"], w[0] * -1 + w[1] * 1, rtol=1e-6)
    np.testing.assert_allclose(merged["head.bias"], 0.25 * 1 + 0.75 * -1, rtol=1e-6)
    assert out["search_sigma"] == pytest.approx(math.sqrt(1.0 / 6)) == server.sigma
    fit = server.instructions(2, "fit", merged, [0])[0]
    assert fit.config["sigma"] == server.sigma
    restored = BlackBoxServer(inner, "fedbpt", 1.0)
    restored.load_state_dict(server.state_dict())
    assert restored.sigma == server.sigma


def _reachable(root: object, depth: int = 4) -> list[tuple[str, object]]:
    """Every object reachable through public attributes (and containers)."""
    seen: set[int] = set()
    out: list[tuple[str, object]] = []

    def walk(path: str, obj: object, left: int) -> None:
        if id(obj) in seen or left < 0:
            return
        seen.add(id(obj))
        out.append((path, obj))
        if isinstance(obj, dict):
            items = [(str(k), v) for k, v in obj.items()]
        elif isinstance(obj, list | tuple):
            items = [(str(i), v) for i, v in enumerate(obj)]
        elif hasattr(obj, "__dict__") and not isinstance(obj, type):
            items = [(k, v) for k, v in vars(obj).items() if not k.startswith("_")]
        else:
            items = []
        for name, value in items:
            walk(f"{path}.{name}", value, left - 1)

    walk("client", root, depth)
    return out


def test_a_black_box_client_reaches_no_weights_and_no_gradients(
    decoder: Backbone,
) -> None:
    client = client_for(decoder)
    for path, obj in _reachable(client):
        assert not isinstance(obj, torch.nn.Module | Backbone | torch.Tensor), path
    data = shard().train
    mask = (np.arange(6)[None] < data.lengths[:, None]).astype(np.int64)
    prompts = np.zeros((1, 3, 32), np.float32)
    out = client.service.features(0, prompts, data.input_ids, mask)
    assert isinstance(out, np.ndarray) and out.flags.owndata  # a copy
    weights = decoder.word_embeddings.weight
    assert not np.shares_memory(out, weights.detach().numpy())


def test_the_verbalizer_head_is_derived_not_sent(
    decoder: Backbone, tiny_experiment: Any
) -> None:
    encoder = tiny_experiment.backbone
    assert encoder.kind == "encoder"
    adapter = build_adapter(
        options(), decoder, 2, torch.Generator().manual_seed(0), LABELS
    )
    assert set(adapter.trainable_state()) == {"z"}
    rows = decoder.lm_head_rows(decoder.verbalizer_ids(LABELS))
    torch.testing.assert_close(adapter.head.weight.detach(), rows.float())
    with pytest.raises(ValueError, match="decoder's label words"):
        build_adapter(options(), encoder, 2, torch.Generator().manual_seed(0), LABELS)


def test_the_config_picks_the_covariance_from_the_rule_and_refuses_mismatches() -> None:
    def peft(*extra: str) -> Any:
        return load_config(None, ["peft.method=blackbox", *extra]).peft

    assert peft().covariance == "diagonal"
    assert peft("peft.server_rule=mean").covariance == "isotropic"
    with pytest.raises(ConfigError, match="which only"):
        peft("peft.server_rule=mean", "peft.covariance=diagonal")
    assert peft("peft.head=verbalizer").head_init == "random"
    with pytest.raises(ConfigError, match="does not apply"):
        peft("peft.head=verbalizer", "peft.head_init=probe")


def test_the_diagonal_step_recombines_like_the_rank_rule_and_keeps_rms_one() -> None:
    rng = np.random.default_rng(0)
    z, stds = np.zeros(6), np.linspace(0.5, 1.5, 6)
    means = [rng.standard_normal(6) * 0.3 for _ in range(3)]
    fitness = [0.5, 0.2, 0.9]
    mean, shape = diagonal_step(z, 0.7, stds, means, fitness)
    w = rank_weights(3)  # ranks: client 1, 0, 2
    np.testing.assert_allclose(
        mean, w[0] * means[1] + w[1] * means[0] + w[2] * means[2]
    )
    assert float(np.sqrt(np.mean(shape**2))) == pytest.approx(1.0)
    assert np.all(np.diff(shape) > 0)  # the ordering of the scales survives one step
    again = diagonal_step(z, 0.7, stds, means, fitness)[1]
    np.testing.assert_array_equal(shape, again)  # no randomness


def test_a_round_with_one_client_left_takes_its_mean_and_keeps_the_scales() -> None:
    """cma cannot select from a population of one (it raises, and that once
    failed a Flower run whose other client was dropped)."""
    stds = np.linspace(0.5, 1.5, 6)
    alone = np.arange(6.0)
    mean, shape = diagonal_step(np.zeros(6), 0.7, stds, [alone], [0.3])
    np.testing.assert_array_equal(mean, alone)
    np.testing.assert_allclose(shape, stds / np.sqrt(np.mean(stds**2)))


def test_the_search_distribution_round_trips_through_the_wire_and_checkpoint(
    decoder: Backbone,
) -> None:
    """The server sends z, σ and s, never a pickled ES; a client started from
    the deserialized payload searches exactly as from the in-memory one, and
    returns ΔP of the adapter's state only (s travels down, not up)."""
    adapter = build_adapter(
        options(), decoder, 2, torch.Generator().manual_seed(0), LABELS
    )
    params = adapter.trainable_state()
    server = BlackBoxServer(uniform_server(), "fedbpt", 0.5, diagonal=True)
    server.stds = np.linspace(0.5, 1.5, 16)
    ins = server.instructions(1, "fit", params, [0])[0]
    assert set(ins.payload) == {"z", SEARCH_STDS} and ins.config["sigma"] == 0.5
    assert set(reply_layout(ins.payload)) == {"z"}
    wired = Instruction(0, 1, "fit", deserialize(serialize(ins.payload)), ins.config)
    here, there = client_for(decoder).fit(ins), client_for(decoder).fit(wired)
    np.testing.assert_array_equal(here.delta["z"], there.delta["z"])
    assert set(here.delta) == {"z"}
    flat = dict(ins.payload, **{SEARCH_STDS: np.ones(16, np.float32)})
    isotropic = client_for(decoder).fit(Instruction(0, 1, "fit", flat, ins.config))
    assert not np.array_equal(isotropic.delta["z"], here.delta["z"])  # s is used
    ups = [here, ClientUpdate(1, {"z": -here.delta["z"]}, 12, dict(here.metrics))]
    server.merge(1, params, ups)
    restored = BlackBoxServer(uniform_server(), "fedbpt", 1.0, diagonal=True)
    restored.load_state_dict(server.state_dict())
    assert restored.sigma == server.sigma
    assert restored.stds is not None and server.stds is not None
    np.testing.assert_array_equal(restored.stds, server.stds)
    bad = dict(ins.payload, **{SEARCH_STDS: -np.ones(16, np.float32)})
    with pytest.raises(ValueError, match="positive finite"):
        client_for(decoder).fit(Instruction(0, 1, "fit", bad, ins.config))


def test_a_fixed_head_travels_down_only_and_keeps_its_value(
    decoder: Backbone,
) -> None:
    adapter = build_adapter(
        options(head="fixed"), decoder, 2, torch.Generator().manual_seed(0), LABELS
    )
    params = adapter.trainable_state()
    assert set(params) == {"z", "head.weight", "head.bias"}
    server = BlackBoxServer(uniform_server(), "fedbpt", 0.5, fixed_head=True)
    ins = server.instructions(1, "fit", params, [0])[0]
    assert set(reply_layout(ins.payload)) == {"z"}
    np.testing.assert_array_equal(
        ins.payload["downlink/head.weight"], params["head.weight"]
    )
    up = client_for(decoder, head="fixed").fit(ins)
    assert set(up.delta) == {"z"} and np.abs(up.delta["z"]).max() > 0
    merged, _ = server.merge(1, params, [up])
    np.testing.assert_array_equal(merged["head.weight"], params["head.weight"])
    np.testing.assert_allclose(merged["z"], params["z"] + up.delta["z"], atol=1e-7)
    mean = BlackBoxServer(uniform_server(), "mean", 0.5, fixed_head=True)
    merged, _ = mean.merge(1, params, [up])
    np.testing.assert_array_equal(merged["head.bias"], params["head.bias"])
    with pytest.raises(ConfigError, match="same logit"):
        load_config(
            None, ["peft.method=blackbox", "peft.head=fixed", "peft.head_init=zeros"]
        )
