"""The ``[fedsp]`` section: clients tune on an auxiliary model (FedSP)."""

from __future__ import annotations

from pydantic import Field

from fedpeft.config_sections import Section


class FedSPSection(Section):
    """Soft prompts as messengers (Dong et al. 2023): the server keeps the full
    model, clients tune ``peft.method = prefix`` (or ``prompt``) on a small
    auxiliary model it distilled and shipped once (:mod:`fedpeft.fedsp`)."""

    enabled: bool = Field(
        False, description="clients train on the auxiliary model, never the full one"
    )
    depth: int | None = Field(
        None, ge=1, description="auxiliary layers run per forward (unset: full depth)"
    )
    share: bool = Field(
        True, description="one layer's weights at every position (FedSP's sharing)"
    )
    source: int = Field(
        0, description="full layer the shared weights start from (FedSP's code: 0)"
    )
    distill: bool = Field(
        True, description="align the auxiliary model to the full one (off: ablation)"
    )
    distill_corpus: str = Field(
        "20newsgroups",
        description="server-side unlabeled text (a corpus the clients do not hold)",
    )
    distill_texts: int = Field(4000, ge=16, description="texts drawn from it")
    distill_steps: int = Field(300, ge=1, description="AdamW steps (FedSP: 5,000)")
    distill_lr: float = Field(5e-4, gt=0.0, description="peak learning rate")
    distill_batch: int = Field(8, ge=1, description="sequences per step")
    distill_seed: int = Field(
        0, ge=0, description="seed of the distillation (one model serves many runs)"
    )
    logit_kd: float = Field(
        0.0, ge=0.0, description="weight of the next-token KL term (decoders)"
    )
    server_steps: int = Field(
        0,
        ge=0,
        description="FedSP's server-side step: AdamW steps on the full model per "
        "round with the last client's shard as the server's labeled data (that "
        "client then never trains); 0: off",
    )
    model_steps: int = Field(
        0,
        ge=0,
        description="FedSP's local model stage: AdamW steps per round on the "
        "client's own copy of the auxiliary layers (never sent); 0: off",
    )
