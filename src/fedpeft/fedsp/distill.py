"""Aligning the auxiliary model with the full model by distillation.

The server runs the frozen full model (the teacher) and the auxiliary model
(the student) on unlabeled text of its own and trains the student's layer
weights so that, at every auxiliary position j, its hidden states match the
teacher's after the full layer j stands for (FedSP, Dong et al. 2023, §3.2:
hidden-state MSE, AdamW). The loss per position is the squared error relative
to the teacher's squared norm over real tokens, so that layers with large
activations do not drown the others; an optional term adds the KL divergence
of the next-token distributions (decoders; Hinton et al. 2015, T = 1).

Only the layer weights train: the embeddings, final norm and LM head stay the
full model's, so prompts and verbalizer rows mean the same on both sides.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from fedpeft.fedsp.auxiliary import LayerPlan
from fedpeft.models.backbone import Backbone
from fedpeft.models.layer_plan import layer_weights
from fedpeft.models.precision import autocast
from fedpeft.models.tokenized import Batch, TokenizedDataset


@dataclass(frozen=True)
class DistillSettings:
    """How long and how the student trains.

    Attributes:
        steps: AdamW steps (FedSP's code runs 5,000 on a GPU).
        lr: Learning rate (FedSP: 5e-4), cosine-decayed to 0 after a 5% warm-up.
        batch_size: Sequences per step.
        logit_kd: Weight of the next-token KL term (0: hidden states only;
            decoders only).
        precision: ``"auto"``, ``"bf16"`` autocast or ``"fp32"`` for both
            models' matmuls.
        weight_decay: AdamW's decoupled weight decay.
    """

    steps: int = 300
    lr: float = 5e-4
    batch_size: int = 8
    logit_kd: float = 0.0
    precision: str = "auto"
    weight_decay: float = 0.0


@dataclass
class DistillLog:
    """The training loss per step and the held-out error before and after."""

    losses: list[float] = field(default_factory=list)
    heldout_before: float = float("nan")
    heldout_after: float = float("nan")


def hidden_error(
    teacher: Backbone,
    student: Backbone,
    plan: LayerPlan,
    batch: Batch,
    precision: str = "auto",
    logit_kd: float = 0.0,
) -> torch.Tensor:
    """The distillation loss on one batch (differentiable in the student).

    Returns:
        Mean over positions of ‖h_s − h_t‖² / ‖h_t‖² over real tokens, plus
        ``logit_kd`` × the mean next-token KL(teacher ‖ student).
    """
    mask = batch.attention_mask.bool()  # (B, T)
    with torch.no_grad(), autocast(precision, teacher.device):
        t_out = teacher.model(
            input_ids=batch.input_ids,
            attention_mask=batch.attention_mask,
            output_hidden_states=True,
        )
    with autocast(precision, student.device):
        s_out = student.model(
            input_ids=batch.input_ids,
            attention_mask=batch.attention_mask,
            output_hidden_states=True,
        )
    terms = []
    for j, target in enumerate(plan.targets):
        h_t = t_out.hidden_states[target + 1][mask].float()  # (tokens, dim)
        h_s = s_out.hidden_states[j + 1][mask].float()
        terms.append((h_s - h_t).pow(2).sum() / h_t.pow(2).sum().clamp_min(1e-12))
    loss = torch.stack(terms).mean()
    if logit_kd and teacher.kind == "decoder":
        t_log = F.log_softmax(t_out.logits[mask].float(), dim=-1)  # (tokens, V)
        s_log = F.log_softmax(s_out.logits[mask].float(), dim=-1)
        kl = F.kl_div(s_log, t_log, log_target=True, reduction="batchmean")
        loss = loss + logit_kd * kl
    return loss


def heldout_error(
    teacher: Backbone,
    student: Backbone,
    plan: LayerPlan,
    data: TokenizedDataset,
    batch_size: int = 16,
    precision: str = "auto",
) -> float:
    """Mean relative hidden-state error (no KL term) over ``data``."""
    errors, weights = [], []
    with torch.no_grad():
        for idx, batch in data.length_sorted_batches(batch_size, teacher.device):
            errors.append(float(hidden_error(teacher, student, plan, batch, precision)))
            weights.append(len(idx))
    return float(np.average(errors, weights=weights))


def trainable_layers(student: Backbone) -> list[torch.nn.Parameter]:
    """The student's layer weights (each shared tensor once), made trainable."""
    params = layer_weights(student.model)
    for p in params:
        p.requires_grad_(True)
    return params


def distill(
    teacher: Backbone,
    student: Backbone,
    plan: LayerPlan,
    data: TokenizedDataset,
    settings: DistillSettings,
    rng: np.random.Generator,
    heldout: TokenizedDataset | None = None,
    on_step: Callable[[int, float], None] | None = None,
) -> DistillLog:
    """Train ``student``'s layers in place to imitate ``teacher``.

    Args:
        data: Unlabeled server-side text (labels are ignored), tokenized.
        rng: Draws the batches (sampled without replacement, epoch by epoch).
        heldout: Text to measure the error on before and after.
        on_step: Called with (step, loss) after every step (progress bars).

    Raises:
        ValueError: for too little data for one batch.
    """
    if len(data) < settings.batch_size:
        raise ValueError(
            f"{len(data)} distillation texts for batches of {settings.batch_size}; "
            "give more server-side text or a smaller fedsp.distill_batch"
        )
    log = DistillLog()
    if heldout is not None:
        log.heldout_before = heldout_error(teacher, student, plan, heldout)
    params = trainable_layers(student)
    optimizer = torch.optim.AdamW(
        params, lr=settings.lr, weight_decay=settings.weight_decay
    )
    schedule = _warmup_cosine(optimizer, settings.steps)
    order: list[int] = []
    try:  # eval mode: no dropout, so a step is a function of the seed
        for step in range(settings.steps):
            if len(order) < settings.batch_size:
                order.extend(rng.permutation(len(data)).tolist())
            size = settings.batch_size
            batch = data.batch(np.asarray(order[:size]), teacher.device)
            order = order[size:]
            loss = hidden_error(
                teacher, student, plan, batch, settings.precision, settings.logit_kd
            )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            optimizer.step()
            schedule.step()
            log.losses.append(float(loss.detach()))
            if on_step is not None:
                on_step(step + 1, log.losses[-1])
    finally:
        for p in params:
            p.requires_grad_(False)
    if heldout is not None:
        log.heldout_after = heldout_error(teacher, student, plan, heldout)
    return log


def _warmup_cosine(
    optimizer: torch.optim.Optimizer, steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    warm = max(1, steps // 20)

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        progress = (step - warm) / max(1, steps - warm)
        return 0.5 * (1.0 + float(np.cos(np.pi * min(1.0, progress))))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
