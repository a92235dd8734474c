"""The two privacy steps of record-level DP-SGD, on torch tensors.

Abadi et al. 2016, "Deep Learning with Differential Privacy", Algorithm 1, with
Poisson-sampled batches L_t (each record kept with probability q) and the
expected batch size q·n as the denominator::

    g_i = ∇_θ ℓ(θ; x_i)                                   per example
    ḡ_i = g_i · min(1, C / ‖g_i‖₂)                        clip_per_example
    g̃   = ( Σ_{i∈L_t} ḡ_i + N(0, σ²C² I) ) / (q·n)        gaussian_noise
    θ  ← optimizer step with gradient g̃

The per-example gradients g_i and the training loop are in
:mod:`fedpeft.client.dp_local`; accounting is
:func:`fedpeft.privacy.accounting.record_level_epsilon`. Unlike the rest of
:mod:`fedpeft.privacy` this module needs torch, so the package does not import it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

from fedpeft.privacy.clipping import check_clip_norm
from fedpeft.privacy.noise import secure_standard_normal


def clip_per_example(
    grads: Mapping[str, Tensor], max_norm: float
) -> tuple[dict[str, Tensor], Tensor]:
    """Clip each example's gradient (all tensors jointly) to L2 norm ≤ C.

    ``ḡ_i = g_i · C / max(C, ‖g_i‖₂)`` — no division by zero for a zero gradient
    since C > 0. Norms are computed in float64.

    Args:
        grads: ``{name: (B, *shape)}``, row i being example i's gradient.
        max_norm: The bound C > 0.

    Returns:
        ``(clipped {name: (B, *shape)}, norms (B,) float64 before clipping)``.

    Raises:
        ValueError: if C is not a finite number > 0 or ``grads`` is empty.
    """
    c = check_clip_norm(max_norm)
    if not grads:
        raise ValueError("no per-example gradients to clip (no trainable parameters)")
    first = next(iter(grads.values()))
    b = int(first.shape[0])
    sq = first.new_zeros(b, dtype=torch.float64)
    for g in grads.values():
        sq = sq + g.reshape(b, math.prod(g.shape[1:])).double().pow(2).sum(dim=1)
    norms = sq.sqrt()  # (B,)
    factor = c / torch.clamp(norms, min=c)  # (B,) in (0, 1]
    clipped = {
        n: g * factor.to(g.dtype).view(b, *([1] * (g.dim() - 1)))
        for n, g in grads.items()
    }
    return clipped, norms


def gaussian_noise(
    shape: Sequence[int],
    std: float,
    generator: torch.Generator | None,
    *,
    secure: bool = False,
) -> Tensor:
    """``N(0, std²)`` draws of ``shape`` (float32, on the generator's device).

    The noise of one DP-SGD step is ``gaussian_noise(shape, σ·C, ...)`` per
    trainable tensor. Seeded draws come from ``generator`` alone (never the
    global RNG), so a client's noise is the same whether it trains alone or
    batched with others; ``secure=True`` draws from OS entropy
    (:func:`fedpeft.privacy.noise.secure_standard_normal`) and ignores the
    generator.

    Raises:
        ValueError: if ``std`` is not a finite number >= 0, or there is no
            generator and ``secure`` is False.
    """
    if not (math.isfinite(std) and std >= 0):
        raise ValueError(f"noise std must be a finite number >= 0, got {std!r}")
    if secure:
        draws = secure_standard_normal(math.prod(shape))
        return torch.from_numpy(draws).float().reshape(tuple(shape)) * std
    if generator is None:
        raise ValueError(
            "DP-SGD noise needs an explicit torch.Generator or secure=True; the "
            "global RNG is never used"
        )
    normal = torch.randn(
        tuple(shape), generator=generator, dtype=torch.float32, device=generator.device
    )
    return normal * std
