"""Black-box prompt tuning's options."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from fedpeft.peft.config import PeftConfig


class BlackBoxConfig(PeftConfig):
    """A prompt ``A·z`` of L vectors: z in d dimensions, A a fixed random
    projection regenerated from ``projection_seed`` by the server and every
    client (never sent). Clients search z with CMA-ES (``[blackbox]`` section)."""

    method: Literal["blackbox"] = "blackbox"
    head_init: Literal["class-means", "probe", "zeros", "random"] = Field(
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
        "with CMA weights and adapt σ and the diagonal covariance (FedBPT); "
        "mean: the n_k-weighted mean of the client means through the strategy "
        "(works with secure aggregation)",
    )
    head: Literal["local", "verbalizer"] = Field(
        "local",
        description="local: the client fits the linear head on the features the "
        "service returns (hybrid, encoders); verbalizer: a decoder's label-word "
        "logits alone, nothing trained but z",
    )

    def adapter_options(self) -> dict[str, Any]:
        """The adapter's options (the search's stay with the client)."""
        keep = ("prompt_length", "intrinsic_dim", "projection_seed", "alpha")
        return {k: getattr(self, k) for k in keep}
