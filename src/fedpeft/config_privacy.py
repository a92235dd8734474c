"""The ``[privacy]`` section of the run config: secure aggregation and the DP
sections (client-level DP-FedAvg, record-level DP-SGD); see :mod:`fedpeft.privacy`.
"""

from __future__ import annotations

from typing import Any, Literal, Self

from pydantic import Field, model_validator

from fedpeft.config_sections import Section


def _positive(default: float | None, description: str = "") -> Any:
    """A strictly positive, finite float option (σ, ε, C)."""
    return Field(
        default, gt=0.0, strict=True, allow_inf_nan=False, description=description
    )


class _DpNoiseSection(Section):
    """What both DP sections share: σ given, or calibrated to a target ε
    (exactly one of the two), and the accountant."""

    noise_multiplier: float | None = _positive(None, "σ (noise std σ·C)")
    target_epsilon: float | None = _positive(None, "calibrate σ to stay within ε")
    accountant: Literal["rdp", "pld"] = "rdp"

    @model_validator(mode="after")
    def _noise_source(self) -> Self:
        sigma, target = self.noise_multiplier, self.target_epsilon
        if sigma is not None and target is not None:
            raise ValueError(
                f"set exactly one of noise_multiplier (got {sigma!r}) and "
                f"target_epsilon (got {target!r}), not both: σ is either given "
                "or calibrated to reach ε"
            )
        if sigma is None and target is None:
            raise ValueError(
                "set exactly one of noise_multiplier (σ) and target_epsilon (σ "
                "calibrated so the whole run stays within ε); neither is set"
            )
        return self


class ClientDPSection(_DpNoiseSection):
    """Client-level DP-FedAvg (McMahan et al. 2018); see fedpeft.privacy.

    Exactly one of ``noise_multiplier`` and ``target_epsilon`` is set; the
    target is for all rounds of the run.
    """

    clip_norm: float = _positive(0.1, "bound C on each update's L2 norm")
    delta: float = Field(
        1e-3, gt=0.0, lt=1.0, description="δ; keep it below 1/num_clients"
    )
    mode: Literal["central", "distributed"] = "central"
    target_quantile: float | None = Field(
        None,
        gt=0.0,
        lt=1.0,
        description="adaptive clipping (Andrew et al. 2021): C tracks this quantile "
        "of the update norms, starting at clip_norm (unset: C fixed)",
    )
    quantile_lr: float = Field(
        0.2, gt=0.0, description="adaptive clipping: geometric step size of C"
    )
    count_noise: float | None = _positive(
        None, "adaptive clipping: noise std on the unclipped count (unset: m/20)"
    )

    @model_validator(mode="after")
    def _adaptive(self) -> Self:
        if self.target_quantile is not None and self.mode == "distributed":
            raise ValueError(
                "target_quantile (adaptive clipping) runs with mode = 'central': "
                "distributed noise would have to split the clip count's noise "
                "among the clients too, which is not implemented"
            )
        return self


class RecordDPSection(_DpNoiseSection):
    """Record-level DP-SGD inside every client (Abadi et al. 2016).

    Exactly one of ``noise_multiplier`` and ``target_epsilon`` is set; the
    target is per client, for the whole run.
    """

    clip_norm: float = _positive(1.0, "per-example gradient bound")
    delta: float = Field(1e-4, gt=0.0, lt=1.0)


class PrivacySection(Section):
    secagg: bool = Field(False, description="secure aggregation of the client updates")
    secagg_bits: int = Field(
        32, ge=8, le=62, description="masked values live in Z_(2^b)"
    )
    secagg_clip_range: float = Field(
        1.0, gt=0.0, description="per-coordinate range [-r, r] before quantization"
    )
    secagg_threshold: float = Field(
        0.5, gt=0.0, le=1.0, description="Shamir t / neighbours"
    )
    secagg_neighbours: Literal["complete", "log2"] = "complete"
    secure: bool = Field(
        False, description="masks, keys and noise from OS entropy (not reproducible)"
    )
    client_dp: ClientDPSection | None = None
    record_dp: RecordDPSection | None = None
