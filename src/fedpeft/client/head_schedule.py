"""When the classification head trains (FedBABU: Oh et al. 2022, "FedBABU:
Toward Enhanced Representation for Federated Image Classification").

Under label skew the head is the part of the model that learns each client's
label prior fastest, and averaging heads that point at different classes is
what makes rounds swing. FedBABU keeps the head at its initial value during
federated training and trains only the body; here the initial head is the
round-0 warm start (``peft.head_init``). ``client.head_unfreeze_round``
schedules it separately: frozen before that round, trained from it on.

A frozen head is a zero learning rate for the head's AdamW group: its ΔP is
exactly zero (it still travels; its bytes are counted).
"""

from __future__ import annotations

from fedpeft.config import ClientSection


def head_frozen(cfg: ClientSection, rnd: int) -> bool:
    """Whether the head stays fixed in round ``rnd``."""
    if cfg.head != "frozen":
        return False
    return cfg.head_unfreeze_round == 0 or rnd < cfg.head_unfreeze_round


def round_settings(cfg: ClientSection, rnd: int) -> ClientSection:
    """The local-training settings of round ``rnd`` (head learning rate 0
    while the head is frozen)."""
    if head_frozen(cfg, rnd):
        return cfg.model_copy(update={"head_lr": 0.0})
    return cfg
