"""Local training of an adapter: E epochs (or a fixed number of steps) of AdamW,
with an optional FedProx proximal term (Li et al. 2020, Eq. 2):

    min_θ  F_k(θ) + (μ / 2) · ‖θ − θ_global‖²
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from fedpeft.client.evaluate import EvalResult, evaluate
from fedpeft.client.flops import FlopMeter
from fedpeft.client.label_skew import LogitAdjust
from fedpeft.client.scaffold import GradientMean, with_control
from fedpeft.client.steps import LocalTrainStats, batch_orders, build_optimizer
from fedpeft.config import ClientSection
from fedpeft.models.precision import autocast
from fedpeft.models.tokenized import Batch, TokenizedDataset
from fedpeft.peft.base import AdapterClassifier
from fedpeft.types import ClientUpdate, Params

if TYPE_CHECKING:
    from fedpeft.client.dp_local import RecordDP


def _proximal_term(
    model: AdapterClassifier, anchor: Mapping[str, torch.Tensor]
) -> torch.Tensor:
    """‖θ − θ_global‖² over every trainable tensor (the squared L2 norm)."""
    params = model.trainable_parameters()
    return sum(
        ((p - anchor[n]).pow(2).sum() for n, p in params.items()),
        torch.zeros((), device=model.device),
    )


def train_adapter(
    model: AdapterClassifier,
    data: TokenizedDataset,
    cfg: ClientSection,
    rng: np.random.Generator,
    *,
    proximal_mu: float = 0.0,
    precision: str = "fp32",
    flops: FlopMeter | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    adjust: LogitAdjust | None = None,
    correction: Mapping[str, torch.Tensor] | None = None,
) -> LocalTrainStats:
    """Train ``model``'s trainable tensors in place on ``data``.

    Args:
        model: Adapter already loaded with the starting (global) state.
        data: The client's training examples.
        cfg: Local-training settings (epochs/steps, batch size, learning rates).
        rng: Shuffles the data; derived from (seed, round, client).
        proximal_mu: FedProx μ; 0 disables the proximal term.
        precision: Backbone compute precision (``"auto"``, ``"fp32"`` or ``"bf16"``).
        flops: Accumulates the FLOPs of the steps taken.
        optimizer: Continue with this optimizer (and its moments) instead of a
            fresh AdamW from :func:`build_optimizer`.
        adjust: The label-skew loss's logit map (:mod:`fedpeft.client.label_skew`).
        correction: SCAFFOLD's ``c − c_k`` per trainable tensor, added to every
            step's gradient; the stats then carry the mean raw gradient as
            ``control`` (:mod:`fedpeft.client.scaffold`).
    """
    if len(data) == 0:
        raise ValueError(
            "a client with no training examples cannot train; raise partition.min_size"
        )
    meter = flops if flops is not None else FlopMeter()
    start_flops = meter.total
    optimizer = optimizer if optimizer is not None else build_optimizer(model, cfg)
    params = model.trainable_parameters()
    anchor = {n: p.detach().clone() for n, p in params.items()}
    grad_mean = GradientMean() if correction is not None else None
    losses: list[float] = []
    examples = 0
    started = time.perf_counter()
    for order in batch_orders(
        len(data), cfg.batch_size, cfg.local_epochs, cfg.local_steps, rng
    ):
        batch = data.batch(order, model.device)

        def step(batch: Batch = batch) -> float:
            with autocast(precision, model.device):
                logits = model(batch)
            if adjust is not None:
                logits = adjust(logits)
            loss = F.cross_entropy(logits, batch.labels)
            total = loss
            if proximal_mu > 0:
                total = loss + 0.5 * proximal_mu * _proximal_term(model, anchor)
            optimizer.zero_grad(set_to_none=True)
            total.backward()  # type: ignore[no-untyped-call]
            if grad_mean is not None:
                grad_mean.add(
                    {n: p.grad for n, p in params.items() if p.grad is not None}
                )
            if cfg.max_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(params.values(), cfg.max_grad_norm)
            if correction is not None:
                for n, p in params.items():
                    if p.grad is None:
                        p.grad = correction[n].clone()
                    else:
                        p.grad.add_(correction[n])
            optimizer.step()
            return float(loss.detach())

        width = batch.input_ids.shape[1]
        losses.append(meter.run(("train", width), step, count=len(batch)))
        examples += len(batch)
    return LocalTrainStats(
        loss=float(np.mean(losses)) if losses else float("nan"),
        steps=len(losses),
        examples=examples,
        flops=round(meter.total - start_flops),
        seconds=time.perf_counter() - started,
        control=None
        if grad_mean is None
        else {
            n: g.cpu().numpy().astype(np.float32)
            for n, g in grad_mean.mean(list(params), anchor).items()
        },
    )


def local_update(
    client_id: int,
    model: AdapterClassifier,
    global_params: Params,
    train: TokenizedDataset,
    val: TokenizedDataset,
    cfg: ClientSection,
    rng: np.random.Generator,
    *,
    proximal_mu: float = 0.0,
    precision: str = "fp32",
    eval_precision: str = "auto",
    eval_batch_size: int = 128,
    record_dp: RecordDP | None = None,
    dp_generator: torch.Generator | None = None,
    flops: FlopMeter | None = None,
    adjust: LogitAdjust | None = None,
    correction: Params | None = None,
) -> ClientUpdate:
    """One client's round: load the global state, train, return ΔP and metrics.

    The returned ``delta`` is ``local − global`` for every payload tensor;
    ``num_examples`` is the client's training-set size n_k. With ``record_dp``
    the local training is DP-SGD (:mod:`fedpeft.client.dp_local`), its noise
    drawn from ``dp_generator``. ``adjust`` and ``correction`` are the
    label-skew loss and SCAFFOLD's correction (:func:`train_adapter`).
    """
    model.load_trainable_state(global_params)
    if record_dp is not None:
        # Kept off the module's import path: dp_local brings dp_accounting and
        # scipy (+1.3 s), which training without DP never needs.
        from fedpeft.client.dp_local import dp_train_adapter

        if proximal_mu > 0:
            raise ValueError(
                "FedProx's proximal term is not part of the DP-SGD "
                "analysis; use another strategy with privacy.record_dp"
            )
        if adjust is not None or correction:
            raise ValueError(
                "record-level DP-SGD clips each example's gradient of plain "
                "cross-entropy; client.loss and SCAFFOLD make an example's loss "
                "depend on the client's other records. Use client.loss = "
                "'cross-entropy' and strategy.scaffold = false with privacy.record_dp"
            )
        if dp_generator is None and not record_dp.secure:
            raise ValueError("record-level DP-SGD needs a seeded dp_generator")
        stats = dp_train_adapter(
            model,
            train,
            cfg,
            record_dp,
            rng,
            dp_generator or torch.Generator(),
            precision,
        )
    else:
        stats = train_adapter(
            model,
            train,
            cfg,
            rng,
            proximal_mu=proximal_mu,
            precision=precision,
            flops=flops,
            adjust=adjust,
            correction={
                n: torch.from_numpy(np.asarray(v, np.float32)).to(model.device)
                for n, v in correction.items()
            }
            if correction
            else None,
        )
    return finish_update(
        client_id,
        model,
        global_params,
        stats,
        len(train),
        val,
        eval_batch_size,
        eval_precision,
    )


def finish_update(
    client_id: int,
    model: AdapterClassifier,
    global_params: Params,
    stats: LocalTrainStats,
    num_examples: int,
    val: TokenizedDataset,
    eval_batch_size: int,
    eval_precision: str,
    val_result: EvalResult | None = None,
) -> ClientUpdate:
    """ΔP = local − global of ``model``'s trained state, the training statistics
    and the trained model's validation metrics, as the client's update
    (``val_result``: those metrics, already computed with the trained state)."""
    local = model.trainable_state()
    delta = {k: local[k] - global_params[k] for k in global_params}
    if stats.control is not None:
        delta = with_control(delta, stats.control)
    metrics = {
        "train_loss": stats.loss,
        "train_steps": float(stats.steps),
        "train_examples": float(stats.examples),
        "flops": float(stats.flops),
        "train_seconds": stats.seconds,
    }
    if len(val):
        if val_result is None:
            val_result = evaluate(model, val, eval_batch_size, eval_precision)
        metrics.update(val_result.as_dict("val_"))
    return ClientUpdate(
        client_id=client_id, delta=delta, num_examples=num_examples, metrics=metrics
    )
