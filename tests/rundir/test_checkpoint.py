"""Checkpoints: every file hashed, a missing LATEST reported, resume described."""

from __future__ import annotations

import json
import logging
import subprocess
from pathlib import Path

import numpy as np
import pytest

from fedpeft.rundir.checkpoint import (
    Checkpoint,
    CheckpointError,
    describe_resume,
    load_checkpoint,
    save_checkpoint,
)


def _checkpoint(rnd: int) -> Checkpoint:
    rng = np.random.default_rng(rnd)
    return Checkpoint(
        round=rnd,
        params={"prompt": rng.standard_normal((4, 8)).astype(np.float32)},
        strategy_state={"m/prompt": np.full((4, 8), rnd, np.float32)},
        history=[
            {"run": "federated", "round": r, "test_accuracy": 0.5}
            for r in range(rnd + 1)
        ],
        extra={"note": "x"},
    )


def _saved(tmp_path: Path, rounds: int = 3) -> Path:
    directory = tmp_path / "checkpoint"
    for rnd in range(rounds):
        save_checkpoint(directory, _checkpoint(rnd))
    return directory


def _edit_state(directory: Path, edit: object, indent: int | None = None) -> None:
    path = directory / "round-00002" / "state.json"
    state = json.loads(path.read_text())
    edit(state)  # type: ignore[operator]
    path.write_text(json.dumps(state, indent=indent))


def test_save_then_load_round_trips_and_keeps_only_the_newest(tmp_path: Path) -> None:
    directory = _saved(tmp_path)

    loaded = load_checkpoint(directory)

    want = _checkpoint(2)
    assert loaded is not None
    assert (loaded.round, loaded.history, loaded.extra) == (2, want.history, want.extra)
    np.testing.assert_array_equal(loaded.params["prompt"], want.params["prompt"])
    np.testing.assert_array_equal(
        loaded.strategy_state["m/prompt"], want.strategy_state["m/prompt"]
    )
    assert sorted(p.name for p in directory.iterdir()) == ["LATEST", "round-00002"]


def test_an_edited_round_in_state_json_is_detected(tmp_path: Path) -> None:
    directory = _saved(tmp_path)
    _edit_state(directory, lambda s: s.update(round=3))

    with pytest.raises(CheckpointError, match=r"state\.json does not match") as caught:
        load_checkpoint(directory)
    assert "--overwrite" in str(caught.value)
    with pytest.raises(CheckpointError, match=r"state\.json"):
        describe_resume(directory)


def test_an_edited_history_is_detected(tmp_path: Path) -> None:
    directory = _saved(tmp_path)
    _edit_state(directory, lambda s: s["history"][1].update(test_accuracy=0.99))

    with pytest.raises(CheckpointError, match=r"round-00002/state\.json"):
        load_checkpoint(directory)


def test_a_reformatted_state_json_is_detected(tmp_path: Path) -> None:
    directory = _saved(tmp_path)
    _edit_state(directory, lambda s: None, indent=1)  # same content, other bytes

    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(directory)


def test_an_edited_array_file_is_detected(tmp_path: Path) -> None:
    directory = _saved(tmp_path)
    path = directory / "round-00002" / "strategy.safetensors"
    blob = bytearray(path.read_bytes())
    blob[-1] ^= 1
    path.write_bytes(bytes(blob))

    with pytest.raises(CheckpointError, match=r"strategy\.safetensors does not match"):
        load_checkpoint(directory)


@pytest.mark.parametrize(
    "text",
    ["round-00002", "round-00001 " + "0" * 64, "round-00002 " + "f" * 64, ""],
)
def test_an_edited_latest_is_detected(tmp_path: Path, text: str) -> None:
    directory = _saved(tmp_path)
    (directory / "LATEST").write_text(text)

    with pytest.raises(CheckpointError, match="LATEST"):
        load_checkpoint(directory)


def test_a_missing_latest_is_an_error_that_says_how_to_restore_it(
    tmp_path: Path,
) -> None:
    directory = _saved(tmp_path)
    latest = (directory / "LATEST").read_text()
    (directory / "LATEST").unlink()

    with pytest.raises(CheckpointError, match="LATEST is missing") as caught:
        load_checkpoint(directory)

    message = str(caught.value)
    assert "round-00002" in message and "--overwrite" in message
    restore = next(line for line in message.splitlines() if "printf" in line)
    subprocess.run(restore, shell=True, check=True)  # the line the user would run
    assert (directory / "LATEST").read_text() == latest
    loaded = load_checkpoint(directory)
    assert loaded is not None and loaded.round == 2


def test_a_missing_latest_with_a_damaged_newest_round_says_so(tmp_path: Path) -> None:
    directory = _saved(tmp_path)
    (directory / "LATEST").unlink()
    (directory / "round-00002" / "params.safetensors").write_bytes(b"junk")

    with pytest.raises(CheckpointError, match="not usable either") as caught:
        load_checkpoint(directory)
    assert "printf" not in str(caught.value)


def test_no_checkpoint_is_none_and_says_round_0(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    directory = tmp_path / "checkpoint"

    with caplog.at_level(logging.INFO, logger="fedpeft.rundir.checkpoint"):
        assert load_checkpoint(directory) is None

    expected = f"no checkpoint in {directory}: starting from round 0"
    assert describe_resume(directory) == expected
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (logging.WARNING, expected)
    ]


def test_describe_resume_names_the_round_and_the_directory(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    directory = _saved(tmp_path, rounds=4)

    expected = f"resuming after round 3 of 6 from {directory / 'round-00003'}"
    assert describe_resume(directory, total_rounds=6) == expected
    assert describe_resume(directory, total_rounds=3).startswith("round 3 of 3 is done")
    with caplog.at_level(logging.INFO, logger="fedpeft.rundir.checkpoint"):
        load_checkpoint(directory)
    assert caplog.messages == [
        f"resuming after round 3 from {directory / 'round-00003'}"
    ]
