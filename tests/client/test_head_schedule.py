"""FedBABU's frozen head (fedpeft.client.head_schedule): the schedule, and a
client's head delta is exactly zero while frozen, sequential and batched."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from fedpeft.client.flops import FlopMeter
from fedpeft.client.head_schedule import head_frozen, round_settings
from fedpeft.config import ClientSection, ConfigError, load_config
from fedpeft.engine.simulation import FederatedRun
from fedpeft.experiment import Experiment
from fedpeft.messages import Instruction
from fedpeft.types import ClientUpdate


@pytest.mark.parametrize(
    ("head", "unfreeze", "frozen_rounds"),
    [
        ("train", 0, []),
        ("frozen", 0, [0, 1, 2, 3, 4, 50]),  # 0 = never unfrozen
        ("frozen", 3, [0, 1, 2]),  # trained from round 3 on
        ("frozen", 1, [0]),
    ],
)
def test_head_is_frozen_exactly_before_the_unfreeze_round(
    head: str, unfreeze: int, frozen_rounds: list[int]
) -> None:
    cfg = ClientSection(head=head, head_unfreeze_round=unfreeze, head_lr=0.02)
    for rnd in [0, 1, 2, 3, 4, 50]:
        frozen = rnd in frozen_rounds
        assert head_frozen(cfg, rnd) is frozen, rnd
        settings = round_settings(cfg, rnd)
        assert settings.head_lr == (0.0 if frozen else 0.02), rnd
        # nothing else changes, and the caller's config is not mutated
        assert settings.model_copy(update={"head_lr": 0.02}) == cfg
    assert cfg.head_lr == 0.02


METER = FlopMeter()  # one FLOP meter: each step shape is counted once


def _run(exp: Experiment, **client: object) -> FederatedRun:
    update = {"batch_size": 8, "local_steps": 2, "head_lr": 0.01, **client}
    cfg = exp.config.model_copy(
        update={"client": exp.config.client.model_copy(update=update)}
    )
    run = FederatedRun(dataclasses.replace(exp, config=cfg))
    run.client.flops = METER
    return run


def _head_and_body_moves(update: ClientUpdate) -> tuple[float, float]:
    head = max(float(np.abs(v).max()) for k, v in update.delta.items() if "head" in k)
    body = max(
        float(np.abs(v).max()) for k, v in update.delta.items() if "head" not in k
    )
    return head, body


@pytest.mark.slow
def test_frozen_head_delta_is_exactly_zero_and_the_body_trains(
    tiny_experiment: Experiment,
) -> None:
    run = _run(tiny_experiment, head="frozen")
    start = run.model.trainable_state()
    group = [Instruction(k, 1, "fit", start) for k in range(2)]
    for update in [run.client.fit(group[0]), *run.client.fit_many(group)]:
        assert {"head.weight", "head.bias"} <= set(update.delta)  # still sent
        head, body = _head_and_body_moves(update)
        assert head == 0.0
        assert body > 1e-4
    # The same client with a trained head moves it.
    head, _ = _head_and_body_moves(_run(tiny_experiment).client.fit(group[0]))
    assert head > 1e-4


@pytest.mark.slow
def test_head_trains_from_the_unfreeze_round(tiny_experiment: Experiment) -> None:
    run = _run(tiny_experiment, head="frozen", head_unfreeze_round=3)
    start = run.model.trainable_state()
    moves = {
        rnd: _head_and_body_moves(run.client.fit(Instruction(0, rnd, "fit", start)))
        for rnd in (2, 3)
    }
    assert moves[2][0] == 0.0 and moves[2][1] > 1e-4
    assert moves[3][0] > 1e-4 and moves[3][1] > 1e-4


def test_a_frozen_zero_head_is_refused_naming_the_fix() -> None:
    frozen = "client.head=frozen"
    with pytest.raises(ConfigError) as err:
        load_config(None, [frozen, "peft.head_init=zeros"])
    assert "use head_init = 'class-means', 'probe' or 'random'" in str(err.value)
    with pytest.raises(ConfigError, match="head_init = 'class-means'"):
        load_config(
            None, [frozen, "peft.head_init=zeros", "client.head_unfreeze_round=2"]
        )
    # Accepted: another initial head, a zero head trained from round 1, or a
    # zero head that is not frozen.
    for items in (
        [frozen, "peft.head_init=class-means"],
        [frozen, "peft.head_init=random"],
        [frozen, "peft.head_init=zeros", "client.head_unfreeze_round=1"],
        ["peft.head_init=zeros"],
    ):
        load_config(None, items)
