"""Label-skew local losses (fedpeft.client.label_skew): each against its formula
computed by hand, the stacked per-client maps, and the batched engine against
the sequential one with a loss on."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fedpeft.client.flops import FlopMeter
from fedpeft.client.label_skew import LogitAdjust, class_counts, logit_adjust
from fedpeft.config import ClientSection, ConfigError, load_config
from fedpeft.engine.simulation import FederatedRun
from fedpeft.experiment import Experiment
from fedpeft.messages import Instruction
from tests.client.helpers import perturbed_starts

# Client with class counts n = (3, 0, 1): class 1 is absent.
LABELS = np.array([0, 0, 2, 0])
LOGITS = np.array(
    [
        [1.0, 2.0, -0.5],
        [0.3, -1.2, 2.2],
        [-0.7, 0.4, 0.1],
        [2.5, 0.0, -1.0],
    ]
)
TAU, ALPHA = 0.7, 0.3
# Hand-computed adjusted logits per loss, for n = (3, 0, 1), ε = 1e-8:
#   balanced softmax: logits + (log 3, log 1e-8, log 1) = + (1.0986123, -18.420681, 0)
#   FedLC: logits - τ (3^-1/4, (1e-8)^-1/4, 1^-1/4) = - 0.7 (0.7598357, 100, 1)
#   FedRS: logits · (1, α, 1) = · (1, 0.3, 1)
EXPECTED = {
    "balanced-softmax": LOGITS + np.array([1.0986123, -18.420681, 0.0]),
    "logit-calibrated": LOGITS - TAU * np.array([0.7598357, 100.0, 1.0]),
    "restricted-softmax": LOGITS * np.array([1.0, ALPHA, 1.0]),
}
CFG = ClientSection(loss="cross-entropy", calibration_tau=TAU, restricted_alpha=ALPHA)


def _cross_entropy(logits: np.ndarray, labels: np.ndarray) -> float:
    """Mean of log Σ_c exp(z_c) - z_y, in float64."""
    peak = logits.max(axis=1, keepdims=True)
    lse = np.log(np.exp(logits - peak).sum(axis=1)) + peak[:, 0]
    return float(np.mean(lse - logits[np.arange(len(labels)), labels]))


def test_class_counts_and_the_constants_used_above() -> None:
    np.testing.assert_array_equal(class_counts(LABELS, 3), [3.0, 0.0, 1.0])
    assert math.log(3) == pytest.approx(1.0986123, abs=1e-7)
    assert math.log(1e-8) == pytest.approx(-18.420681, abs=1e-6)
    assert pytest.approx(0.7598357, abs=1e-7) == 3**-0.25


@pytest.mark.parametrize("loss", sorted(EXPECTED))
def test_each_loss_adjusts_logits_and_cross_entropy_as_its_formula(
    loss: str,
) -> None:
    adjust = logit_adjust(CFG.model_copy(update={"loss": loss}), LABELS, 3)
    assert adjust is not None
    logits = torch.tensor(LOGITS, dtype=torch.float32)
    adjusted = adjust(logits)
    np.testing.assert_allclose(adjusted.numpy(), EXPECTED[loss], rtol=1e-6, atol=1e-5)
    ce = F.cross_entropy(adjusted, torch.tensor(LABELS))
    expected_ce = _cross_entropy(EXPECTED[loss], LABELS)
    assert float(ce) == pytest.approx(expected_ce, rel=1e-5)
    # The loss changes the objective: plain cross-entropy differs.
    assert abs(expected_ce - _cross_entropy(LOGITS, LABELS)) > 1e-3


def test_cross_entropy_is_no_adjustment() -> None:
    assert logit_adjust(CFG, LABELS, 3) is None


def test_stacked_adjustment_gives_each_example_its_clients_row() -> None:
    balanced = CFG.model_copy(update={"loss": "balanced-softmax"})
    adjusts = [
        logit_adjust(balanced, LABELS, 3),  # n = (3, 0, 1)
        None,  # a client on plain cross-entropy: identity row
        logit_adjust(balanced, np.array([1, 1, 0]), 3),  # n = (1, 2, 0)
    ]
    stacked = LogitAdjust.stack(adjusts, 3, torch.device("cpu"))
    assert stacked is not None
    owner = torch.tensor([2, 0, 1, 0])
    out = stacked(torch.tensor(LOGITS, dtype=torch.float32), owner).numpy()
    offsets = {
        0: np.array([1.0986123, -18.420681, 0.0]),
        1: np.zeros(3),
        2: np.array([0.0, 0.6931472, -18.420681]),  # (log 1, log 2, log 1e-8)
    }
    expected = np.stack([LOGITS[i] + offsets[int(k)] for i, k in enumerate(owner)])
    np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-5)
    assert LogitAdjust.stack([None, None], 3, torch.device("cpu")) is None


def test_unknown_loss_and_out_of_range_labels_raise() -> None:
    # model_copy skips validation: the config refuses the name before this.
    with pytest.raises(ValueError, match=r"unknown client\.loss 'focal'"):
        logit_adjust(CFG.model_copy(update={"loss": "focal"}), LABELS, 3)
    with pytest.raises(ValueError, match="3 classes"):
        logit_adjust(
            CFG.model_copy(update={"loss": "balanced-softmax"}), np.array([0, 3]), 3
        )
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        class_counts(np.array([-1, 1]), 3)


METER = FlopMeter()
"""One FLOP meter for this module's runs: counting a step shape's FLOPs is
slow, and each shape is counted once per meter."""


def _run(exp: Experiment, **client: object) -> FederatedRun:
    cfg = exp.config.model_copy(
        update={"client": exp.config.client.model_copy(update=client)}
    )
    run = FederatedRun(dataclasses.replace(exp, config=cfg))
    run.client.flops = METER
    return run


@pytest.mark.slow
@pytest.mark.parametrize("loss", sorted(EXPECTED))
def test_batched_clients_with_a_loss_match_sequential_clients(
    tiny_experiment: Experiment, loss: str
) -> None:
    """GradientClient.fit_many (one stacked step for all clients, each with its
    own logit map) equals GradientClient.fit client by client; clients 0 and 2
    of the tiny partition lack classes, so the absent-class terms act."""
    exp = tiny_experiment
    assert (class_counts(exp.clients[0].train.labels, exp.num_classes) == 0).any()
    settings = {"batch_size": 8, "local_steps": 3}
    run = _run(exp, loss=loss, **settings)
    starts = perturbed_starts(run.model.trainable_state(), 3)
    group = [Instruction(k, 1, "fit", starts[k]) for k in range(3)]
    batched = run.client.fit_many(group)
    sequential = [run.client.fit(ins) for ins in group]
    cfg = run.client.settings.client
    step = max(cfg.lr, cfg.head_lr)
    for b, s in zip(batched, sequential, strict=True):
        assert b.client_id == s.client_id
        assert b.metrics["train_loss"] == pytest.approx(
            s.metrics["train_loss"], rel=1e-4
        )
        for name, expected in s.delta.items():
            assert np.abs(expected).max() > 1e-4, name  # training moved it
            diff = np.abs(b.delta[name] - expected)
            # as in test_batched.py: Adam may shift a near-zero-gradient
            # coordinate by a small part of a step when sums are reordered
            tight = 2e-5 + 1e-4 * np.abs(expected)
            assert (diff > tight).sum() <= max(2, 1e-3 * diff.size), name
            assert diff.max() <= 0.05 * step, name
    # The loss is really applied: plain cross-entropy trains client 0 otherwise.
    plain = _run(exp, loss="cross-entropy", **settings).client.fit(group[0])
    moved = max(
        float(np.abs(plain.delta[n] - sequential[0].delta[n]).max())
        for n in plain.delta
    )
    assert moved > 1e-4


def test_record_level_dp_refuses_a_label_skew_loss_naming_the_fix() -> None:
    record_dp = "privacy.record_dp={noise_multiplier=1.0}"
    assert load_config(None, [record_dp]).client.loss == "cross-entropy"
    for loss in sorted(EXPECTED):
        assert load_config(None, [f"client.loss={loss}"]).client.loss == loss
        with pytest.raises(ConfigError) as err:
            load_config(None, [record_dp, f"client.loss={loss}"])
        assert "use client.loss = 'cross-entropy' with privacy.record_dp" in str(
            err.value
        )
