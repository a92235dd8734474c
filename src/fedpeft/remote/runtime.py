"""The server's runtime for clients in other processes or on other machines.

:class:`RemoteRuntime` is a :class:`~fedpeft.engine.loop.Runtime`: it turns the
round's instructions into requests (:mod:`fedpeft.remote.envelope`), has a
:class:`Transport` deliver them, and turns the answers into replies. What
carries the bytes is the transport's business: Flower messages
(:mod:`fedpeft.flower`), or, for tests and debugging, direct calls into
:class:`~fedpeft.remote.node.NodeWorker` objects of this process
(:class:`LocalTransport`), every message still encoded to bytes and back.

Before the first round, :meth:`RemoteRuntime.connect` greets every node: each
must run the same configuration and fedpeft version, and hold the client the
server expects with the number of examples the server expects.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import fedpeft
from fedpeft.messages import Instruction, Reply, reply_layout
from fedpeft.remote.envelope import (
    Envelope,
    EnvelopeError,
    client_update,
    task_envelope,
)
from fedpeft.remote.node import NodeWorker
from fedpeft.remote.secure_sum import RemoteSum
from fedpeft.remote.secure_wire import Merge
from fedpeft.types import check_params_like

logger = logging.getLogger(__name__)


class FederationError(RuntimeError):
    """The federation cannot start: missing, mismatched or refusing nodes."""


class Transport(Protocol):
    """Carries requests to client nodes and their answers back."""

    def discover(self, hello: Envelope) -> dict[int, Envelope | str]:
        """Greet every reachable node; per client id its answer (a node that
        refuses answers with an ``error`` envelope keyed by a negative id)."""
        ...

    def exchange(self, requests: Mapping[int, Envelope]) -> dict[int, Envelope | str]:
        """One request per client id; per client id its answer or why none came."""
        ...


@dataclass
class RemoteRuntime:
    """Runs the round's instructions on remote clients (module docstring).

    Attributes:
        transport: How messages travel.
        secure: The server's secure sum when the run aggregates securely: the
            runtime tells it which clients hold the round's sealed updates,
            and carries what rides on the task messages.
        reply_limit: Largest reply accepted, in bytes (a larger one is dropped).
    """

    transport: Transport
    secure: RemoteSum | None = None
    reply_limit: int = 1 << 28
    lookahead: Callable[[str, int], Merge | None] | None = None
    """The merge after ``(task, round)`` and its clients, where the loop can
    tell (:meth:`fedpeft.engine.loop.RoundLoop.next_merge`): its secure sum's first
    stages then ride on this merge's messages."""
    clients: dict[int, int] = field(default_factory=dict)
    """Client id -> its n_k, as the nodes reported them."""

    def connect(self, digest: str, sizes: Sequence[int | None]) -> list[int]:
        """Greet the nodes and check them against the server's view.

        Args:
            digest: The server's configuration digest.
            sizes: Per client the n_k the server expects, or ``None`` where the
                client holds data of its own (``fedpeft node --data``): then
                the node's report is taken, and the node must answer now.

        Returns:
            Per client its n_k (a client that has not joined: the expected one).

        Raises:
            FederationError: a node refuses (config or version differs),
                reports a different n_k, or a client of unknown n_k is missing.
        """
        hello = Envelope("hello", {"digest": digest, "version": fedpeft.__version__})
        answers = self.transport.discover(hello)
        problems = []
        for _, ans in sorted(answers.items()):
            if isinstance(ans, str) or ans.kind == "error":
                problems.append(ans if isinstance(ans, str) else ans.error)
                continue
            k, n = int(ans.header["client_id"]), int(ans.header["num_examples"])
            if not 0 <= k < len(sizes):
                problems.append(f"a node holds client {k}, outside 0..{len(sizes) - 1}")
            elif sizes[k] is not None and n != sizes[k]:
                problems.append(
                    f"client {k} holds {n} examples, the server expects {sizes[k]} "
                    "(different data or partition settings)"
                )
            elif n < 1:
                problems.append(f"client {k} holds no training examples")
            else:
                self.clients[k] = n
        missing = sorted(set(range(len(sizes))) - set(self.clients))
        unknown = [k for k in missing if sizes[k] is None]
        if unknown:
            problems.append(
                f"clients {unknown} hold data of their own, but their nodes did not "
                "answer; every such node must be up before the run starts (the "
                "server weights clients by the n_k they report)"
            )
        if problems:
            raise FederationError("; ".join(problems))
        if missing:
            logger.warning(
                "no node answered for clients %s; they are left out until they join",
                missing,
            )
        return [self.clients.get(k, n or 0) for k, n in enumerate(sizes)]

    def run(self, instructions: Sequence[Instruction]) -> list[Reply]:
        """Deliver every instruction; one reply per instruction, in order."""
        requests = {ins.client_id: task_envelope(ins) for ins in instructions}
        sizes = {k: len(env.encode()) for k, env in requests.items()}
        scope = (instructions[0].task, instructions[0].round) if instructions else None
        if self.secure is not None and scope is not None:
            upcoming = self.lookahead(*scope) if self.lookahead else None
            requests = self.secure.outgoing(scope, requests, upcoming)
        answers = self.transport.exchange(requests)
        replies = [
            self._reply(ins, answers.get(ins.client_id), sizes) for ins in instructions
        ]
        if self.secure is not None and scope is not None:
            participants = [r.client_id for r in replies if r.update]
            self.secure.incoming(scope, participants, answers)
        return replies

    def _reply(
        self,
        ins: Instruction,
        answer: Envelope | str | None,
        sizes: Mapping[int, int],
    ) -> Reply:
        down = sizes[ins.client_id]
        if answer is None or isinstance(answer, str) or answer.kind != "reply":
            why = (
                "no reply"
                if answer is None
                else answer
                if isinstance(answer, str)
                else answer.error
            )
            logger.warning(
                "round %d: client %d sent no update (%s)", ins.round, ins.client_id, why
            )
            return Reply(ins.client_id, None, why or "no reply", down)
        size = len(answer.encode())
        try:
            if size > self.reply_limit:
                raise EnvelopeError(
                    f"reply of {size} bytes exceeds the limit of {self.reply_limit}"
                )
            update = client_update(answer)
            if update.client_id != ins.client_id:
                raise EnvelopeError(
                    f"answer for client {ins.client_id} names client {update.client_id}"
                )
            if ins.task == "fit":
                check_params_like(
                    reply_layout(ins.payload),
                    update.delta,
                    what=f"client {ins.client_id}'s update",
                )
        except ValueError as err:
            logger.warning(
                "round %d: client %d's reply is malformed (%s); dropped",
                ins.round,
                ins.client_id,
                err,
            )
            return Reply(ins.client_id, None, str(err), down)
        return Reply(ins.client_id, update, "", down, size)


@dataclass
class LocalTransport:
    """Nodes in this process, every message encoded to bytes and back.

    Attributes:
        nodes: The client nodes.
        down: Client ids that do not answer (a vanished client); a test may
            change it between calls.
        fail_at: Per client id the (round, secure-sum stage or ``"task"``)
            at which it vanishes for good.
    """

    nodes: Sequence[NodeWorker]
    down: set[int] = field(default_factory=set)
    fail_at: dict[int, tuple[int, str]] = field(default_factory=dict)

    def discover(self, hello: Envelope) -> dict[int, Envelope | str]:
        out: dict[int, Envelope | str] = {}
        for i, node in enumerate(self.nodes):
            if node.client_id in self.down:
                continue
            answer = self._call(node, hello)
            out[node.client_id if answer.kind == "reply" else -1 - i] = answer
        return out

    def exchange(self, requests: Mapping[int, Envelope]) -> dict[int, Envelope | str]:
        by_id = {n.client_id: n for n in self.nodes}
        out: dict[int, Envelope | str] = {}
        for k, env in requests.items():
            h = env.header
            stage = h["stage"] if env.kind == "secagg" else env.kind
            if self.fail_at.get(k) == (h.get("round"), stage):
                self.down.add(k)
            if k in self.down or k not in by_id:
                out[k] = "no reply"
                continue
            out[k] = self._call(by_id[k], env)
        return out

    @staticmethod
    def _call(node: NodeWorker, env: Envelope) -> Envelope:
        return Envelope.decode(node.handle(Envelope.decode(env.encode())).encode())
