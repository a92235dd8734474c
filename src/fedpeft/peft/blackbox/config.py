"""Black-box prompt tuning's options."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from fedpeft.peft.config import PeftConfig


class BlackBoxConfig(PeftConfig):
    """A prompt ``A·z`` of L vectors: z in d dimensions, A a fixed random
    projection regenerated from ``projection_seed`` by the server and every
    client (never sent). Clients search z with CMA-ES (``[blackbox]`` section)."""

    method: Literal["blackbox"] = "blackbox"
    head_init: Literal["class-means", "lda", "probe", "zeros", "random"] = Field(
        "probe",
        description="probe: the mean of the clients' heads fitted on the "
        "features of z = 0 before round 1 (class-means is not offered)",
    )
    prompt_length: int = Field(50, ge=1, le=256, description="virtual tokens L")
    intrinsic_dim: int = Field(500, ge=1, le=100_000, description="d, the size of z")
    projection_seed: int = Field(
        0, ge=0, description="seed of the projection A, shared by server and clients"
    )
    alpha: float = Field(
        1.0,
        gt=0.0,
        description="A ~ N(0, (alpha·std(word embeddings)/√d)²): with z ~ N(0, I) "
        "each prompt entry has the word embeddings' scale times alpha",
    )
    popsize: int = Field(
        20, ge=2, le=1000, description="CMA-ES population per iteration"
    )
    iterations: int = Field(
        8, ge=1, le=10_000, description="CMA-ES iterations per client and round"
    )
    sigma0: float = Field(1.0, gt=0.0, description="the search's initial step size σ")
    search_batch: int = Field(
        32,
        ge=1,
        description="training examples each iteration scores its population on "
        "(one draw per iteration, shared by the candidates)",
    )
    server_rule: Literal["fedbpt", "mean"] = Field(
        "fedbpt",
        description="fedbpt: rank the client means by their fitness, recombine "
        "with CMA weights and set σ from the clients' step sizes (FedBPT); "
        "mean: the n_k-weighted mean of the client means through the strategy "
        "(works with secure aggregation)",
    )
    covariance: Literal["diagonal", "isotropic"] = Field(
        "diagonal",
        description="the global search distribution's shape. diagonal: the "
        "server's CMA-ES step on the client means adapts d per-coordinate "
        "standard deviations, sent down beside z (needs server_rule = fedbpt, "
        "which sees every mean); isotropic: σ alone. Unset: diagonal under "
        "fedbpt, isotropic under mean",
    )
    head: Literal["local", "fixed", "verbalizer"] = Field(
        "local",
        description="local: the client scores with the global linear head and "
        "refits it on its features after the search; z and the head travel up "
        "(hybrid, encoders). fixed: the head is the round-0 warm start, sent "
        "down beside z and never refitted; z alone travels up. verbalizer: a "
        "decoder's label-word logits, nothing trained but z",
    )

    @model_validator(mode="before")
    @classmethod
    def _defaults(cls, data: Any) -> Any:
        """``covariance`` from the rule; verbalizer mode's head is the seeded
        init (the label words' LM rows), never a warm start."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        diagonal = data.get("server_rule", "fedbpt") == "fedbpt"
        data.setdefault("covariance", "diagonal" if diagonal else "isotropic")
        if data.get("head") == "fixed" and data.get("head_init") == "zeros":
            raise ValueError(
                "peft.head = 'fixed' with peft.head_init = 'zeros' gives every "
                "class the same logit, so no candidate scores better than another; "
                "use head_init = 'probe' (the default)"
            )
        if data.get("head") == "verbalizer":
            if data.get("head_init") in ("probe", "class-means", "lda"):
                raise ValueError(
                    "peft.head = 'verbalizer' keeps the label words' LM rows as the "
                    f"head; peft.head_init = {data['head_init']!r} does not apply "
                    "(leave it unset)"
                )
            data.setdefault("head_init", "random")
        return data

    @model_validator(mode="after")
    def _check(self) -> BlackBoxConfig:
        if self.covariance == "diagonal" and self.server_rule != "fedbpt":
            raise ValueError(
                "peft.covariance = 'diagonal' is adapted from every client's mean, "
                "which only peft.server_rule = 'fedbpt' sees; use covariance = "
                "'isotropic' with server_rule = 'mean'"
            )
        return self

    def adapter_options(self) -> dict[str, Any]:
        """The adapter's options (the search's stay with the client)."""
        keep = ("prompt_length", "intrinsic_dim", "projection_seed", "alpha")
        return {
            **{k: getattr(self, k) for k in keep},
            "verbalizer": self.head == "verbalizer",
        }
