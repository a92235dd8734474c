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
from fedpeft.blackbox.server import client_sigma, rank_weights
from fedpeft.blackbox.service import ModelService
from fedpeft.messages import Instruction
from fedpeft.models.backbone import Backbone
from fedpeft.models.tokenized import TokenizedDataset
from fedpeft.peft import peft_config
from fedpeft.peft.base import build_adapter
from fedpeft.types import ClientUpdate

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
    assert not np.any(first.delta["head.weight"])  # verbalizer: only z is tuned
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


def test_fedbpt_merge_ranks_by_fitness_and_averages_heads_by_size() -> None:
    from fedpeft.blackbox.server import BlackBoxServer
    from fedpeft.config import load_config
    from fedpeft.server.aggregators import PlainAggregator
    from fedpeft.server.uniform import UniformServer
    from fedpeft.strategies import build_strategy

    inner = UniformServer(
        build_strategy(load_config(None, []).strategy), PlainAggregator(), 2
    )
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
