"""Tests for fedpeft.privacy.dpsgd: per-example clipping and DP-SGD noise."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fedpeft.privacy.dpsgd import clip_per_example, gaussian_noise


def _joint_norms(grads: dict[str, torch.Tensor]) -> torch.Tensor:
    """Each example's norm over all its tensors, (B,) float64."""
    flat = torch.cat([g.reshape(g.shape[0], -1) for g in grads.values()], 1).double()
    return flat.norm(dim=1)


def test_clip_factor_hand_computed() -> None:
    # example 0: ‖(3, 4, 0)‖ = 5 > C = 2.5 -> factor 1/2; example 1: ‖(0, 0, 1)‖ = 1
    grads = {
        "w": torch.tensor([[3.0, 4.0], [0.0, 0.0]]),  # (B=2, 2)
        "b": torch.tensor([[0.0], [1.0]]),  # (B=2, 1)
    }
    clipped, norms = clip_per_example(grads, 2.5)
    torch.testing.assert_close(norms, torch.tensor([5.0, 1.0], dtype=torch.float64))
    torch.testing.assert_close(clipped["w"], torch.tensor([[1.5, 2.0], [0.0, 0.0]]))
    torch.testing.assert_close(clipped["b"], torch.tensor([[0.0], [1.0]]))


def test_norm_is_joint_over_tensors_not_per_tensor() -> None:
    # each tensor alone has norm 1 <= C, but together √2 > C: both are scaled
    grads = {"a": torch.tensor([[1.0]]), "b": torch.tensor([[1.0]])}
    clipped, _ = clip_per_example(grads, 1.0)
    half = torch.tensor([[1 / math.sqrt(2)]])
    torch.testing.assert_close(clipped["a"], half)
    torch.testing.assert_close(clipped["b"], half)


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    batch=st.integers(1, 6),
    scale=st.floats(1e-3, 1e3),
    clip=st.floats(1e-3, 10.0),
)
def test_clipped_norms_at_most_c_and_small_ones_untouched(
    seed: int, batch: int, scale: float, clip: float
) -> None:
    gen = torch.Generator().manual_seed(seed)
    grads = {
        "prompt": torch.randn(batch, 2, 8, generator=gen) * scale,
        "head.weight": torch.randn(batch, 3, 8, generator=gen) * scale,
        "head.bias": torch.randn(batch, 3, generator=gen) * scale,
    }
    clipped, norms = clip_per_example(grads, clip)
    after = _joint_norms(clipped)
    assert torch.all(after <= clip * (1 + 1e-5))
    small = norms <= clip
    for name, g in grads.items():
        torch.testing.assert_close(clipped[name][small], g[small])
    big = ~small
    torch.testing.assert_close(
        after[big], torch.full_like(after[big], clip), rtol=1e-5, atol=0
    )


def test_zero_gradient_stays_zero_and_finite() -> None:
    grads = {"w": torch.zeros(3, 4), "b": torch.zeros(3)}
    grads["w"][1] = 10.0  # one non-zero example among zero ones
    clipped, norms = clip_per_example(grads, 0.5)
    assert norms[0] == 0 and norms[2] == 0
    assert all(torch.all(torch.isfinite(g)) for g in clipped.values())
    assert not clipped["w"][0].any() and not clipped["b"][2].any()
    assert float(_joint_norms(clipped)[1]) == pytest.approx(0.5)


def test_clip_rejects_bad_bound_and_empty_grads() -> None:
    grads = {"w": torch.ones(2, 3)}
    for bad in (0.0, -1.0, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="max_norm must be a finite number > 0"):
            clip_per_example(grads, bad)
    with pytest.raises(ValueError, match="no per-example gradients"):
        clip_per_example({}, 1.0)


def test_empty_batch_clips_to_empty() -> None:
    clipped, norms = clip_per_example({"w": torch.zeros(0, 3)}, 1.0)
    assert clipped["w"].shape == (0, 3) and norms.shape == (0,)


def test_seeded_noise_is_the_generators_normals_times_std() -> None:
    noise = gaussian_noise((4, 5), 0.25, torch.Generator().manual_seed(3))
    expected = torch.randn(4, 5, generator=torch.Generator().manual_seed(3)) * 0.25
    assert noise.dtype == torch.float32 and noise.shape == (4, 5)
    torch.testing.assert_close(noise, expected, atol=0, rtol=0)
    other = gaussian_noise((4, 5), 0.25, torch.Generator().manual_seed(4))
    assert not torch.equal(noise, other)


@pytest.mark.parametrize("secure", [False, True])
def test_noise_std_is_std(secure: bool) -> None:
    gen = None if secure else torch.Generator().manual_seed(0)
    noise = gaussian_noise((200, 100), 2.0 * 0.5, gen, secure=secure)  # σ·C = 1.0
    # 20 000 draws: the sample std is within 3% of 1.0 with overwhelming odds
    assert float(noise.std()) == pytest.approx(1.0, rel=0.03)
    assert abs(float(noise.mean())) < 0.04


def test_secure_noise_ignores_seeds_and_is_not_reproducible() -> None:
    a = gaussian_noise((50,), 1.0, torch.Generator().manual_seed(0), secure=True)
    b = gaussian_noise((50,), 1.0, torch.Generator().manual_seed(0), secure=True)
    assert a.dtype == torch.float32 and not torch.equal(a, b)


def test_noise_needs_a_source_and_a_valid_std() -> None:
    with pytest.raises(ValueError, match=r"explicit torch\.Generator or secure=True"):
        gaussian_noise((3,), 1.0, None)
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="noise std must be a finite number"):
            gaussian_noise((3,), bad, torch.Generator())
    assert not gaussian_noise((3,), 0.0, torch.Generator()).any()
