"""Flower messages as a :class:`~fedpeft.remote.runtime.Transport`.

Requests go out with ``Grid.push_messages`` and replies come back with
``Grid.pull_messages`` polled at a short interval (``Grid.send_and_receive``
sleeps 3 s between polls). Every exchange has a deadline: a client that has
not answered by then is reported as failed and the round goes on without it.
Nodes that join later (a restarted SuperNode gets a new node id) are greeted
before the next exchange and take their client's place.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from flwr.app import Message, MessageType
from flwr.serverapp import Grid

from fedpeft.flower.records import from_record, to_record
from fedpeft.remote.envelope import Envelope, EnvelopeError, error

logger = logging.getLogger(__name__)


@dataclass
class FlowerTransport:
    """Carries envelopes to SuperNodes through the SuperLink.

    Attributes:
        grid: The ServerApp's grid.
        timeout: Seconds an exchange waits for its replies.
        poll: Seconds between pulls.
        expected: Nodes :meth:`discover` waits for (up to ``timeout``).
    """

    grid: Grid
    timeout: float = 120.0
    poll: float = 0.02
    expected: int = 0
    nodes: dict[int, int] = field(default_factory=dict)
    """Client id -> node id."""
    _hello: Envelope | None = None
    _seen: set[int] = field(default_factory=set)

    def discover(self, hello: Envelope) -> dict[int, Envelope | str]:
        """Greet every node (waiting up to ``timeout`` for ``expected`` of them)."""
        self._hello = hello
        deadline = time.monotonic() + self.timeout
        while len(set(self.grid.get_node_ids())) < self.expected:
            if time.monotonic() > deadline:
                break
            time.sleep(0.2)
        return self._greet()

    def _greet(self) -> dict[int, Envelope | str]:
        """Hello to every node not greeted yet; map their clients."""
        assert self._hello is not None
        new = [n for n in self.grid.get_node_ids() if n not in self._seen]
        if not new:
            return {}
        answers = self._send({n: self._hello for n in new})
        out: dict[int, Envelope | str] = {}
        for n, ans in answers.items():
            self._seen.add(n)
            if isinstance(ans, Envelope) and ans.kind == "reply":
                k = int(ans.header["client_id"])
                if k in self.nodes and self.nodes[k] != n:
                    logger.info("client %d rejoined as node %d", k, n)
                self.nodes[k] = n
                out[k] = ans
            else:
                why = ans.error if isinstance(ans, Envelope) else ans
                logger.warning("node %d refused to join: %s", n, why)
                out[-n] = ans
        return out

    def exchange(self, requests: Mapping[int, Envelope]) -> dict[int, Envelope | str]:
        if self._hello is not None:
            self._greet()  # nodes that joined since (a restarted SuperNode)
        by_node = {self.nodes[k]: env for k, env in requests.items() if k in self.nodes}
        answers = self._send(by_node)
        client_of = {n: k for k, n in self.nodes.items()}
        out: dict[int, Envelope | str] = {k: "no node" for k in requests}
        for n, ans in answers.items():
            out[client_of[n]] = _from_node(n, ans)
        return out

    def _send(self, by_node: Mapping[int, Envelope]) -> dict[int, Envelope | str]:
        """Push one message per node; per node its answer (or why none)."""
        messages = [
            Message(to_record(env), dst_node_id=n, message_type=MessageType.QUERY)
            for n, env in by_node.items()
        ]
        ids = list(self.grid.push_messages(messages))
        node_of = dict(zip(ids, by_node, strict=True))
        pending = set(i for i in ids if i)
        out: dict[int, Envelope | str] = {}
        deadline = time.monotonic() + self.timeout
        while pending and time.monotonic() < deadline:
            for reply in self.grid.pull_messages(pending):
                mid = reply.metadata.reply_to_message_id
                pending.discard(mid)
                out[node_of[mid]] = _answer(reply)
            if pending:
                time.sleep(self.poll)
        for mid in pending:
            out[node_of[mid]] = f"no reply within {self.timeout:g}s"
        for mid, n in node_of.items():
            if not mid:
                out[n] = "the SuperLink refused the message"
        return out


def _from_node(node: int, answer: Envelope | str) -> Envelope | str:
    """``answer`` with the node id in its failure reason (for the logs)."""
    if isinstance(answer, str):
        return f"node {node}: {answer}"
    if answer.kind == "error":
        return error(f"node {node}: {answer.error}")
    return answer


def _answer(reply: Message) -> Envelope | str:
    if reply.has_error():
        return f"Flower error {reply.error.code}: {reply.error.reason}"
    try:
        return from_record(reply.content)
    except EnvelopeError as err:
        return f"malformed reply: {err}"
