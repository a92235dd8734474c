"""The ``[robust]`` and ``[attack]`` sections of the run config: how the server
resists faulty or malicious updates (:mod:`fedpeft.server.robust`), and which
clients attack and how (:mod:`fedpeft.client.attacks`)."""

from __future__ import annotations

from typing import Literal, Self, get_args

from pydantic import Field, model_validator

from fedpeft.config_sections import Section

RobustRule = Literal[
    "mean", "median", "trimmed-mean", "krum", "multi-krum", "norm-bound"
]
AttackKind = Literal["none", "sign-flip", "scale", "noise", "label-flip", "alie"]
ROBUST_RULES: tuple[str, ...] = get_args(RobustRule)
ATTACKS: tuple[str, ...] = get_args(AttackKind)


class RobustSection(Section):
    """The estimate of the round's update that replaces the strategy's mean."""

    rule: RobustRule = Field(
        "mean",
        description="mean (the strategy's own), median (coordinate-wise), "
        "trimmed-mean, krum, multi-krum, norm-bound (clip, then the strategy's mean)",
    )
    trim: float = Field(
        0.1, ge=0.0, lt=0.5, description="trimmed-mean: fraction dropped at each end"
    )
    byzantine: float = Field(
        0.2,
        ge=0.0,
        lt=0.5,
        description="krum / multi-krum: assumed fraction f/K of a round's updates "
        "that are malicious",
    )
    keep: int = Field(
        0, ge=0, description="multi-krum: updates kept (0 = K - f, Blanchard's m)"
    )
    norm_ratio: float = Field(
        1.0,
        gt=0.0,
        description="norm-bound: clip every update to this many times the round's "
        "median norm",
    )
    max_norm: float = Field(
        0.0,
        ge=0.0,
        description="norm-bound: a fixed L2 bound applied by each client before "
        "sending (0 = use norm_ratio); the only rule secure aggregation allows",
    )
    warm_start: Literal["mean", "rule"] = Field(
        "mean",
        description="round 0's class statistics (peft.head_init = class-means or "
        "lda): mean (summed: exactly the pooled data's head) or rule (each class's "
        "mean feature estimated robustly over the clients holding the class: the "
        "trimmed mean under trimmed-mean, the coordinate median under the other "
        "rules), so clients that send another class's features cannot move it",
    )


class AttackSection(Section):
    """A fixed, seeded set of clients that attack in every round they are
    selected (rounds >= 1; they answer the round-0 warm start honestly,
    except label-flip attackers, whose poisoned data feeds it too)."""

    kind: AttackKind = Field(
        "none",
        description="sign-flip (-scale x update), scale (scale x update), noise "
        "(Gaussian, norm = scale x the honest norm), label-flip (train on "
        "labels C-1-y), alie (Baruch et al. 2019: mean - z std of the "
        "colluders' honest updates)",
    )
    fraction: float = Field(
        0.0, ge=0.0, lt=1.0, description="fraction of the clients that attack"
    )
    scale: float = Field(
        10.0, gt=0.0, description="sign-flip / scale / noise: the attack's magnitude"
    )
    alie_z: float | None = Field(
        None,
        gt=0.0,
        description="alie: std multiplier (unset: Baruch's z_max from the round's "
        "n and number of attackers)",
    )
    claim_examples: int | None = Field(
        None,
        ge=0,
        description="attackers report this many training examples (weight "
        "inflation; unset: their true count)",
    )

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.kind != "none" and self.fraction <= 0.0:
            raise ValueError(
                f"attack.kind = {self.kind!r} needs attack.fraction > 0 "
                "(the fraction of clients that attack)"
            )
        if self.kind == "none" and self.fraction > 0.0:
            raise ValueError(
                f"attack.fraction = {self.fraction} but attack.kind = 'none'; set "
                f"attack.kind to one of {', '.join(ATTACKS[1:])}"
            )
        return self


def threat_refusal(
    robust: RobustSection,
    attack: AttackSection,
    *,
    secagg: bool,
    client_dp: bool,
    devices: bool,
    method: str,
    batch_clients: bool,
    head_init: str = "class-means",
) -> str | None:
    """Why the run config's robust rule or attack cannot run as set (``None``:
    it can); the message names the setting to change."""
    rule = robust.rule
    if rule != "mean":
        if secagg and not (rule == "norm-bound" and robust.max_norm > 0):
            return (
                f"robust.rule = {rule!r} needs every client's update in the clear, "
                "which secure aggregation hides from the server (the server sees "
                "only the sum); with privacy.secagg use robust.rule = 'norm-bound' "
                "with robust.max_norm > 0 (each client bounds its own update before "
                "masking), or turn privacy.secagg off"
            )
        if client_dp:
            return (
                f"robust.rule = {rule!r} with privacy.client_dp: DP-FedAvg already "
                "bounds every update by clip_norm, and its noise is calibrated to "
                "the clipped mean's sensitivity, which a median, trimmed mean or "
                "Krum selection does not have; use robust.rule = 'mean'"
            )
        if devices:
            return (
                f"robust.rule = {rule!r} with devices.profiles: mixed-size LoRA "
                "updates do not share one layout to compare; unset one of them"
            )
        if method == "blackbox":
            return (
                f"robust.rule = {rule!r} with peft.method = 'blackbox': the CMA-ES "
                "server merges search states, not updates; use robust.rule = 'mean'"
            )
    if robust.warm_start == "rule":
        if rule == "mean":
            return (
                "robust.warm_start = 'rule' estimates round 0's class means with the "
                "robust rule, and robust.rule is 'mean'; set robust.rule (e.g. "
                "'median') or robust.warm_start = 'mean'"
            )
        if secagg:
            return (
                "robust.warm_start = 'rule' needs every client's class statistics in "
                "the clear, and privacy.secagg hides them (the server sees only the "
                "sum); set robust.warm_start = 'mean' or turn privacy.secagg off"
            )
        if head_init not in ("class-means", "lda"):
            return (
                f"robust.warm_start = 'rule' acts on the class statistics of "
                f"peft.head_init = 'class-means' or 'lda', and head_init is "
                f"{head_init!r}; set one of those or robust.warm_start = 'mean'"
            )
    if attack.kind != "none" and method == "blackbox":
        return (
            f"attack.kind = {attack.kind!r} with peft.method = 'blackbox': the "
            "attacks act on gradient updates, and CMA-ES clients send search "
            "states; set attack.kind = 'none'"
        )
    if attack.kind == "alie" and not batch_clients:
        return (
            "attack.kind = 'alie' lets the round's attackers collude (mean - z std "
            "of their honest updates), which needs them trained together; set "
            "federation.batch_clients = true"
        )
    return None
