"""Privacy attacks: hand values, and label inference on real client updates."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fedpeft.engine.simulation import FederatedRun
from fedpeft.experiment import Experiment
from fedpeft.privacy.attacks.labels import (
    LabelInference,
    label_histogram,
    project_simplex,
    total_variation,
)
from fedpeft.privacy.attacks.membership import (
    confidence,
    lira_scores,
    loss_scores,
    roc_auc,
    tpr_at_fpr,
)
from tests.conftest import tiny_config


def test_histogram_and_total_variation() -> None:
    h = label_histogram(np.array([0, 0, 2, 2, 2, 1]), 4)
    np.testing.assert_allclose(h, [2 / 6, 1 / 6, 3 / 6, 0])
    assert total_variation([1, 0], [0, 1]) == 1.0
    assert total_variation(h, h) == 0.0


@given(st.lists(st.floats(-5, 5), min_size=2, max_size=8))
def test_simplex_projection(values: list[float]) -> None:
    p = project_simplex(np.array(values))
    assert p.min() >= 0 and p.sum() == pytest.approx(1.0)
    np.testing.assert_allclose(project_simplex(p), p, atol=1e-12)


def test_label_inference_inverts_a_linear_bias_response() -> None:
    rng = np.random.default_rng(0)
    hist = rng.dirichlet(np.full(5, 0.3), size=60)
    response = rng.normal(size=(5, 5)) + 3 * np.eye(5)

    def delta(h: np.ndarray) -> dict[str, np.ndarray]:
        b = (h - 0.2) @ response + rng.normal(0, 0.01, 5)
        return {"head.bias": b.astype(np.float32), "prompt": np.zeros(3, np.float32)}

    attack = LabelInference(ridge=1e-6).fit([delta(h) for h in hist[:40]], hist[:40])
    errors = [total_variation(attack.predict(delta(h)), h) for h in hist[40:]]
    assert np.mean(errors) < 0.05
    with pytest.raises(ValueError, match=r"head\.bias"):
        attack.predict({"prompt": np.zeros(3, np.float32)})


@pytest.mark.slow
def test_label_inference_on_real_updates_beats_the_prior(
    tiny_experiment: Experiment, tmp_path: Path
) -> None:
    """Shadow clients with known Dir(0.3) mixes from the server's own labeled
    data (the test split) calibrate the attack; on the federation's real
    round-1 updates it lands closer to each client's histogram than the
    global label distribution does."""
    cfg = tiny_config(tmp_path, "client.loss=cross-entropy")
    exp = dataclasses.replace(tiny_experiment, config=cfg)
    run = FederatedRun(exp)
    start = run.loop.initial
    c = exp.num_classes
    rng = np.random.default_rng(0)
    pool = exp.test
    by_class = [np.flatnonzero(pool.labels == k) for k in range(c)]
    shadows, hists = [], []
    for _ in range(24):
        mix = rng.dirichlet(np.full(c, 0.3))
        counts = rng.multinomial(30, mix)
        idx = np.concatenate(
            [rng.choice(by_class[k], n, replace=True) for k, n in enumerate(counts)]
        )
        shadows.append(type(exp.clients[0])(pool.subset(idx), pool.subset(idx[:2])))
        hists.append(label_histogram(pool.labels[idx], c))
    real = run.client.data_for
    run.client.data_for = lambda k: shadows[k] if k < 100 else real(k - 100)
    ins = run.loop.server.instructions(1, "fit", start, list(range(24)))
    attack = LabelInference().fit([u.delta for u in run.client.fit_many(ins)], hists)
    targets = run.loop.server.instructions(1, "fit", start, [100, 101, 102, 103])
    updates = run.client.fit_many(targets)
    prior = label_histogram(exp.train.labels, c)
    truth = [label_histogram(exp.clients[k].train.labels, c) for k in range(4)]
    inferred = [
        total_variation(attack.predict(u.delta), h)
        for u, h in zip(updates, truth, strict=True)
    ]
    baseline = [total_variation(prior, h) for h in truth]
    assert np.mean(inferred) < 0.75 * np.mean(baseline)  # measured: 0.26 vs 0.42


def test_loss_and_confidence_by_hand() -> None:
    logits = np.array([[2.0, 0.0], [0.0, 0.0]])
    labels = np.array([0, 1])
    np.testing.assert_allclose(
        loss_scores(logits, labels), [-np.log1p(np.exp(-2.0)), np.log(0.5)]
    )
    np.testing.assert_allclose(confidence(logits, labels), [2.0, 0.0])  # binary: margin


def test_auc_and_tpr() -> None:
    members = np.array([1, 1, 0, 0], bool)
    assert roc_auc(np.array([3, 2, 1, 0]), members) == 1.0
    assert roc_auc(np.array([0, 1, 2, 3]), members) == 0.0
    assert roc_auc(np.array([1, 1, 1, 1]), members) == 0.5
    assert tpr_at_fpr(np.array([3, 2, 1, 0]), members, 0.01) == 1.0
    with pytest.raises(ValueError, match="both"):
        roc_auc(np.array([1.0, 2.0]), np.array([True, True]))


def test_lira_separates_members_that_move_the_confidence() -> None:
    """Synthetic: training on an example raises its φ by 1 (shadows and
    target alike); examples differ in base difficulty, which the loss
    threshold confuses with membership and LiRA does not."""
    rng = np.random.default_rng(0)
    n, shadows = 400, 16
    base = rng.normal(0, 3, n)
    shadow_in = rng.random((shadows, n)) < 0.5
    phi = base + 1.0 * shadow_in + rng.normal(0, 0.3, (shadows, n))
    members = rng.random(n) < 0.5
    target = base + 1.0 * members + rng.normal(0, 0.3, n)
    lira = roc_auc(lira_scores(target, phi, shadow_in), members)
    threshold = roc_auc(target, members)
    assert lira > 0.9 and threshold < 0.7
    with pytest.raises(ValueError, match="IN and one OUT"):
        lira_scores(target, phi, np.ones_like(shadow_in))


def test_token_f1_by_hand() -> None:
    from fedpeft.privacy.attacks.inversion import token_f1

    # multiset overlap: {5, 5, 7} vs {5, 7, 7, 9}: 2 common; specials dropped
    p, r, f1 = token_f1([101, 5, 5, 7], [101, 5, 7, 7, 9, 102], ignore={101, 102})
    assert (p, r) == (2 / 3, 2 / 4)
    assert f1 == pytest.approx(2 * p * r / (p + r))
    assert token_f1([1], [2], set())[2] == 0.0


@pytest.mark.slow
def test_inversion_matches_a_real_gradient(tiny_experiment: Experiment) -> None:
    """The dummy batch's gradient comes to point like the observed one (the
    double backward through the backbone works); a wrong layout is refused."""
    import torch

    from fedpeft.privacy.attacks.inversion import batch_gradient, invert_prompt_update

    model = tiny_experiment.new_adapter()
    data = tiny_experiment.clients[0].train
    ids = torch.from_numpy(data.input_ids[:1, :8].astype(np.int64))
    labels = torch.from_numpy(data.labels[:1])
    observed = batch_gradient(model, ids, labels)
    short = invert_prompt_update(
        model, observed, 1, 8, iters=2, generator=torch.Generator().manual_seed(0)
    )
    long = invert_prompt_update(
        model, observed, 1, 8, iters=80, generator=torch.Generator().manual_seed(0)
    )
    assert long.distance < 0.2 < short.distance
    assert long.tokens.shape == (1, 8)
    with pytest.raises(ValueError, match="lacks"):
        invert_prompt_update(model, {"prompt": observed["prompt"]}, 1, 8, iters=1)


@pytest.mark.slow
def test_per_example_gradients_and_the_label_they_give(
    tiny_experiment: Experiment,
) -> None:
    """One batched pass gives each example's own gradient: their mean is the
    batch gradient, and one example's bias gradient names its label."""
    import torch
    import torch.nn.functional as F

    from fedpeft.privacy.attacks.inversion import (
        batch_gradient,
        label_from_bias,
        per_example_gradients,
        trainable,
    )

    model = tiny_experiment.new_adapter()
    data = tiny_experiment.clients[0].train
    ids = torch.from_numpy(data.input_ids[:3, :8].astype(np.int64))
    labels = torch.from_numpy(data.labels[:3])
    soft = F.one_hot(labels, model.head.out_features).float()
    each = per_example_gradients(model, model.backbone.embed(ids).detach(), soft)
    whole = batch_gradient(model, ids, labels)
    flat = torch.cat([whole[n].reshape(-1) for n, _ in trainable(model)])
    torch.testing.assert_close(each.mean(dim=0), flat, rtol=1e-4, atol=1e-6)
    for i in range(3):
        one = batch_gradient(model, ids[i : i + 1], labels[i : i + 1])
        assert label_from_bias(one) == int(labels[i])
    model.head.bias.requires_grad_(False)
    with pytest.raises(ValueError, match="soft prompt and a linear head"):
        per_example_gradients(model, model.backbone.embed(ids).detach(), soft)


@pytest.mark.slow
def test_token_search_lowers_the_exact_distance(tiny_experiment: Experiment) -> None:
    """From the true batch with two positions corrupted, every kept move
    lowers the distance, the reported distance is the exact one of the
    tokens returned, and the known positions never move."""
    import torch
    import torch.nn.functional as F

    from fedpeft.privacy.attacks.inversion import (
        batch_gradient,
        refine_tokens,
        trainable,
    )

    model = tiny_experiment.new_adapter()
    data = tiny_experiment.clients[0].train
    ids = torch.from_numpy(data.input_ids[:2, :8].astype(np.int64))
    labels = torch.from_numpy(data.labels[:2])
    observed = batch_gradient(model, ids, labels)
    target = torch.cat([observed[n].reshape(-1) for n, _ in trainable(model)])

    def distance(tokens: torch.Tensor) -> float:
        got = batch_gradient(model, tokens, labels)
        flat = torch.cat([got[n].reshape(-1) for n, _ in trainable(model)])
        return float(1 - F.cosine_similarity(flat, target, dim=0))

    start = ids.clone()
    start[0, 3] = 2000
    start[1, 5] = 3000
    fixed = {0: int(ids[0, 0])}
    found = refine_tokens(
        model,
        observed,
        start,
        labels,
        sweeps=2,
        candidates=16,
        fixed=fixed,
        generator=torch.Generator().manual_seed(0),
    )
    assert found.distance < distance(start) - 1e-4
    assert found.distance == pytest.approx(distance(found.tokens), abs=1e-5)
    assert torch.equal(found.tokens[:, 0], ids[:, 0])
