"""The remote wire: envelopes survive bytes and refuse garbage; the node
socket answers only a peer holding its key."""

from __future__ import annotations

import multiprocessing
import time
from pathlib import Path

import numpy as np
import pytest

from fedpeft.messages import Instruction
from fedpeft.remote.envelope import (
    Envelope,
    EnvelopeError,
    client_update,
    instruction,
    task_envelope,
    update_envelope,
)
from fedpeft.remote.socket import key_path, request, serve
from fedpeft.types import ClientUpdate


def test_task_round_trip() -> None:
    ins = Instruction(
        3,
        7,
        "fit",
        {"p": np.arange(6, dtype=np.float32).reshape(2, 3)},
        {"proximal_mu": 0.01},
        (4, 2),
    )
    back = instruction(Envelope.decode(task_envelope(ins).encode()))
    assert (back.client_id, back.round, back.task, back.shape) == (3, 7, "fit", (4, 2))
    assert back.config == {"proximal_mu": 0.01}
    np.testing.assert_array_equal(back.payload["p"], ins.payload["p"])


def test_sealed_update_travels_without_values() -> None:
    update = ClientUpdate(1, {"w": np.ones((2, 2), np.float32)}, 40, {"loss": 0.5})
    env = Envelope.decode(update_envelope(update, sealed=True).encode())
    assert env.arrays == {}
    back = client_update(env)
    assert back.num_examples == 40 and back.metrics == {"loss": 0.5}
    np.testing.assert_array_equal(back.delta["w"], np.zeros((2, 2), np.float32))


@pytest.mark.parametrize(
    "data, match",
    [
        (b"\x00", "truncated"),
        ((1 << 30).to_bytes(4, "big") + b"{}", "claims"),
        (b"\x00\x00\x00\x02{]", "not JSON"),
        (b"\x00\x00\x00\x0f" + b'{"kind":"evil"}', "kind"),
    ],
)
def test_garbage_is_refused(data: bytes, match: str) -> None:
    with pytest.raises(EnvelopeError, match=match):
        Envelope.decode(data)


def test_a_float64_payload_is_refused() -> None:
    env = Envelope(
        "task",
        {"client_id": 0, "round": 1, "task": "fit"},
        {"p": np.zeros(2, np.float64)},
    )
    with pytest.raises(EnvelopeError, match="float64"):
        instruction(Envelope.decode(env.encode()))


def _echo(env: Envelope) -> Envelope:
    return Envelope("reply", {"seen": env.kind}, env.arrays)


def _serve(path: str) -> None:
    serve(_echo, Path(path))


def test_socket_answers_with_the_key_and_cleans_up(tmp_path: Path) -> None:
    sock = tmp_path / "n.sock"
    proc = multiprocessing.get_context("spawn").Process(
        target=_serve, args=(str(sock),)
    )
    proc.start()
    try:
        deadline = time.monotonic() + 30
        while not key_path(sock).exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert oct(key_path(sock).stat().st_mode & 0o777) == "0o600"
        env = Envelope("hello", {}, {"x": np.ones(3, np.float32)})
        reply = Envelope.decode(request(sock, env.encode(), timeout=10))
        assert reply.header == {"seen": "hello"}
        np.testing.assert_array_equal(reply.arrays["x"], np.ones(3, np.float32))
        key_path(sock).write_bytes(b"wrong key " * 3)
        with pytest.raises((ConnectionError, OSError, EOFError)):
            request(sock, env.encode(), timeout=5)
    finally:
        proc.terminate()
        proc.join(10)
    assert not sock.exists() and not key_path(sock).exists()


def test_no_node_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConnectionError, match="fedpeft node"):
        request(tmp_path / "none.sock", b"")
