"""The embedded runtime: every client runs in this process on one shared backbone.

Messages still travel as real bytes: each instruction's payload is serialized
and every client decodes its own copy; each reply's ΔP is serialized and the
server decodes it, so bytes on the wire are measured, not estimated. A client
that raises is reported as failed and the round goes on.

Fast path: with ``batch`` on, the selected clients of one adapter shape train
together (:meth:`fedpeft.client.algorithm.GradientClient.fit_many`); if that
fails, they train one after another.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from fedpeft.client.algorithm import BatchingClient, run_task
from fedpeft.messages import Instruction, Reply
from fedpeft.types import ClientUpdate
from fedpeft.wire import deserialize, serialize

logger = logging.getLogger(__name__)

CLIENT_ERRORS = (RuntimeError, ValueError, MemoryError)
"""What a client may raise and be dropped for (a bug elsewhere still stops)."""


@dataclass
class EmbeddedRuntime:
    """Runs the client algorithm in this process.

    Attributes:
        client: The client algorithm.
        batch: Train the clients of one shape together where the method allows.
    """

    client: BatchingClient
    batch: bool = True

    def run(self, instructions: Sequence[Instruction]) -> list[Reply]:
        """Deliver every instruction; one reply per instruction, in order."""
        encoded: dict[int, bytes] = {}  # a payload object sent to many clients
        for ins in instructions:  # (the uniform server's global state) is
            if id(ins.payload) not in encoded:  # serialized once
                encoded[id(ins.payload)] = serialize(ins.payload)
        blobs = [encoded[id(ins.payload)] for ins in instructions]
        received = [  # every client decodes its own copy
            dataclasses.replace(ins, payload=deserialize(blob))
            for ins, blob in zip(instructions, blobs, strict=True)
        ]
        done = self._fit_batched(received) if self.batch else {}
        replies = []
        for ins, blob in zip(received, blobs, strict=True):
            outcome = done.get(ins.client_id) or self._one(ins)
            if isinstance(outcome, str):
                replies.append(Reply(ins.client_id, None, outcome, len(blob)))
                continue
            up = serialize(outcome.delta)
            update = dataclasses.replace(outcome, delta=deserialize(up))
            replies.append(Reply(ins.client_id, update, "", len(blob), len(up)))
        return replies

    def _one(self, ins: Instruction) -> ClientUpdate | str:
        try:
            return run_task(self.client, ins)
        except CLIENT_ERRORS as err:
            logger.warning(
                "round %d: client %d failed (%s); dropped",
                ins.round,
                ins.client_id,
                err,
            )
            return f"{type(err).__name__}: {err}"

    def _fit_batched(
        self, instructions: Sequence[Instruction]
    ) -> dict[int, ClientUpdate | str]:
        """Fit instructions grouped by adapter shape, each group trained together;
        a group that fails is left to the one-by-one path."""
        groups: dict[tuple[int, int] | None, list[Instruction]] = {}
        for ins in instructions:
            if ins.task == "fit":
                groups.setdefault(ins.shape, []).append(ins)
        out: dict[int, ClientUpdate | str] = {}
        for shape, group in groups.items():
            if not self.client.can_batch(shape):
                continue
            try:
                updates = self.client.fit_many(group)
            except CLIENT_ERRORS as err:
                logger.warning(
                    "round %d: batched local training failed (%s); training the "
                    "clients one after another",
                    group[0].round,
                    err,
                )
                continue
            out.update({u.client_id: u for u in updates})
        return out
