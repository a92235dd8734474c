"""The sections of the run config that hold one component's settings each.

:class:`Section` is their frozen, strict base. The privacy sections live in
:mod:`fedpeft.config_privacy`; the sections chosen by a registry (partition, peft,
strategy) in their components' ``config`` modules. :mod:`fedpeft.config` composes
them all into :class:`~fedpeft.config.RunConfig`.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

DEVICES = "cpu, cuda, cuda:N or auto"
DEVICE_PATTERN = r"^(auto|cpu|cuda(:\d+)?)$"
BASELINES = ("centralized", "local-only", "linear-probe", "zero-shot", "full-finetune")


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


class ModelSection(Section):
    backbone: str = Field(
        "minilm-l6", description="registered name or local HF model dir"
    )
    max_length: int = Field(
        64, ge=8, le=4096, description="tokens per example after truncation"
    )
    image_size: int = Field(
        64,
        ge=32,
        le=1024,
        description="vision backbones: images are resized to this square side "
        "(EfficientNet-Lite0 was trained at 224; 32-64 is what a CPU affords)",
    )
    precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto",
        description="backbone compute dtype for training: auto (bf16 where the "
        "device has bf16 matrix instructions: AVX512-BF16/AMX CPUs, Ampere+ GPUs; "
        "fp32 elsewhere, where torch emulates bf16 many times slower), fp32, or "
        "bf16 (a bf16 copy of the frozen body under autocast). Adapters and their "
        "optimizer stay fp32. On bf16 hardware the main job's accuracy is the same "
        "as fp32's over 3 seeds and the run 1.7x faster (docs/benchmarks.md)",
    )
    eval_precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto", description="backbone compute dtype for evaluation (as precision)"
    )
    device: str = Field(
        "cpu",
        description="where the backbone and adapters compute: cpu, cuda, cuda:N "
        "or auto (a GPU when torch sees one)",
    )

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        if re.fullmatch(DEVICE_PATTERN, value) is None:
            raise ValueError(f"unknown device {value!r}; choose {DEVICES}")
        return value


class DataSection(Section):
    corpus: str = Field(
        "rotten-tomatoes", description="registered corpus, csv:PATH or jsonl:PATH"
    )
    text_column: str = "text"
    label_column: str = "label"
    test_fraction: float = Field(0.2, gt=0.0, lt=1.0)
    split_seed: int = Field(
        0, ge=0, description="seed of the train/test split (fixed across runs)"
    )
    max_train: int | None = Field(
        2000, ge=10, description="subsample of the training pool"
    )
    max_test: int | None = Field(600, ge=10, description="subsample of the test set")
    max_chars: int | None = Field(2000, ge=16)
    encoding: str = Field(
        "utf-8", description="text encoding of a csv/jsonl file, e.g. latin-1"
    )
    drop_duplicates: bool = Field(
        True,
        description="drop repeated texts so no test text is also a training text "
        "(false: keep them and warn; the corpora as read before 2026-12-04)",
    )


class ClientSection(Section):
    local_epochs: int = Field(1, ge=0, le=1000)
    local_steps: int = Field(
        0, ge=0, description="if > 0, a fixed number of steps instead of epochs"
    )
    batch_size: int = Field(16, ge=1, le=4096)
    lr: float = Field(
        3e-3, gt=0.0, le=10.0, description="AdamW learning rate of the method's tensors"
    )
    head_lr: float = Field(
        1e-3, ge=0.0, le=10.0, description="AdamW learning rate of the head"
    )
    full_lr: float = Field(
        5e-5,
        gt=0.0,
        le=1.0,
        description="backbone learning rate of the full fine-tuning baseline",
    )
    weight_decay: float = Field(0.0, ge=0.0)
    max_grad_norm: float = Field(
        0.0, ge=0.0, description="clip the local gradient norm (0 = off)"
    )
    probe_iters: int = Field(
        100, ge=1, description="L-BFGS iterations of the head-fitting linear probe"
    )
    probe_l2: float = Field(1e-3, ge=0.0, description="L2 strength of the linear probe")
    loss: Literal[
        "cross-entropy", "balanced-softmax", "logit-calibrated", "restricted-softmax"
    ] = Field(
        "balanced-softmax",
        description="local loss under label skew: balanced-softmax (logits + log "
        "n_k,c; the default, cross-entropy under privacy.record_dp), "
        "logit-calibrated (FedLC: logits - tau * n_k,c^(-1/4)), restricted-softmax "
        "(FedRS: the logits of classes the client lacks x alpha), cross-entropy",
    )
    calibration_tau: float = Field(
        1.0, gt=0.0, description="FedLC's tau (loss = logit-calibrated)"
    )
    restricted_alpha: float = Field(
        0.5,
        ge=0.0,
        le=1.0,
        description="FedRS's alpha: scale of absent classes' logits "
        "(loss = restricted-softmax; 1 = plain softmax)",
    )
    head: Literal["train", "frozen"] = Field(
        "train",
        description="frozen: the head keeps its round-0 value during local training "
        "(FedBABU); only the method's tensors train",
    )
    head_unfreeze_round: int = Field(
        0,
        ge=0,
        description="with head = frozen: train the head again from this round on "
        "(0 = never)",
    )


class FederationSection(Section):
    num_clients: int = Field(10, ge=1, le=100_000)
    rounds: int = Field(6, ge=0, le=100_000)
    sampling: Literal["fixed", "poisson"] = Field(
        "fixed",
        description="fixed: m clients without replacement; poisson: each with prob q",
    )
    eval_every: int = Field(
        1, ge=1, description="evaluate the global model every k rounds"
    )
    eval_batch_size: int = Field(128, ge=1)
    eval_clients: bool = Field(
        True,
        description="also evaluate the global model on every client's validation "
        "split each evaluated round (client_val_accuracy_mean/_p10); false: the "
        "test set only, at the end too",
    )
    eval_groups: list[str] = Field(
        default_factory=list,
        description="metadata columns of the test set (e.g. sex, ethnicity, "
        "age_group) whose groups each get a test accuracy "
        "(test_accuracy@COLUMN=VALUE) and whose worst group is recorded "
        "(test_worst_group_accuracy, test_worst_group)",
    )
    batch_clients: bool = Field(
        True,
        description="train the selected clients together: one forward/backward over "
        "the shared backbone serves all of them (methods with a per-example forward: "
        "every method but full, which trains one after another)",
    )
    bucket_size: int = Field(
        16,
        ge=0,
        description="with batch_clients: sort each shared step's examples by length "
        "and run them in groups of about this many, each padded only to its own "
        "longest (0 = one padded batch); the gradient is the same. Left unset "
        "with model.device = cuda[:N], it is 0: small kernels leave a GPU idle "
        "(bench/engine_speed.py --device cuda)",
    )
    bucket_threads: int = Field(
        1,
        ge=1,
        le=64,
        description="with batch_clients: run a step's buckets on this many threads "
        "at once (gradients are summed in a fixed order); 1 = one after another, "
        "each using all of torch's threads (faster on the 2-core CPU since the "
        "frozen body's weights are packed: docs/benchmarks.md)",
    )
    update_norm_ratio: float = Field(
        20.0,
        ge=0.0,
        description="reject a client update whose L2 norm exceeds this many times "
        "the round's (lower) median norm; 0 = off (finite values are always required)",
    )


class BaselinesSection(Section):
    run: tuple[str, ...] = Field(
        ("centralized", "linear-probe"), description=", ".join(BASELINES)
    )

    @field_validator("run")
    @classmethod
    def _known(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for name in value:
            if name not in BASELINES:
                raise ValueError(
                    f"unknown baseline {name!r}; choose from {', '.join(BASELINES)}"
                )
        return value


def parse_lora_size(text: str) -> tuple[int, int]:
    """``"RANK@LAYERS"`` (or ``"RANK"`` for all layers) as ``(rank, layers)``."""
    rank, _, layers = str(text).partition("@")
    try:
        parsed = int(rank), int(layers or 0)
    except ValueError:
        parsed = (0, -1)
    if parsed[0] < 1 or parsed[1] < 0:
        raise ValueError(
            f"menu entry {text!r} is not RANK@TOP_LAYERS with rank >= 1 and "
            "layers >= 0 (0 = all layers), e.g. '8@2'"
        )
    return parsed


class DevicesSection(Section):
    """Per-client device profiles and LoRA sizes allocated to fit them."""

    profiles: str | None = Field(
        None,
        description="device population: uniform, tiers, phones-and-servers or "
        "file:PATH (unset: every client trains the configured adapter)",
    )
    policy: str = Field(
        "largest-fit", description="allocation: fixed, largest-fit, budget-proportional"
    )
    deadline_s: float | None = Field(
        None, gt=0.0, description="round deadline: predicted compute + transfer seconds"
    )
    menu: tuple[str, ...] = Field(
        ("2@1", "4@2", "8@4", "16@0"),
        min_length=1,
        description="LoRA sizes RANK@TOP_LAYERS (0 = all layers), smallest first",
    )
    fixed_index: int = Field(-1, description="menu entry of the fixed policy")
    rule: Literal["hetlora", "flexlora", "ffa", "fedavg"] = Field(
        "hetlora", description="aggregation of the mixed-size LoRA updates"
    )

    @field_validator("menu")
    @classmethod
    def _sizes(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for entry in value:
            parse_lora_size(entry)
        return value
