"""Flower ClientApp: relays each message to this node's fedpeft worker.

Flower starts a fresh process for every message, so this module imports
neither torch nor the backbone: it forwards the message's envelope over the
node's local socket (node config ``fedpeft-socket``) to the long-lived worker
started by ``fedpeft node`` (:mod:`fedpeft.remote.node`), and sends its answer
back. A worker that is down or answers garbage gives an error reply, which the
server counts as a failed client.
"""

from __future__ import annotations

from pathlib import Path

from flwr.app import Context, Message, RecordDict
from flwr.clientapp import ClientApp

from fedpeft.flower.records import from_record, to_record
from fedpeft.remote.envelope import Envelope, EnvelopeError, error
from fedpeft.remote.socket import request

SOCKET = "fedpeft-socket"
"""Node-config key: the path of the node worker's socket."""

app = ClientApp()


@app.query()
def query(msg: Message, context: Context) -> Message:
    """Every fedpeft request (hello, task, secure-sum stage)."""
    return Message(relay(msg, context), reply_to=msg)


@app.train()
def train(msg: Message, context: Context) -> Message:
    return Message(relay(msg, context), reply_to=msg)


def relay(msg: Message, context: Context) -> RecordDict:
    """The worker's answer to ``msg`` as Flower content."""
    path = context.node_config.get(SOCKET)
    if not path:
        return to_record(
            error(
                f"this SuperNode has no node config {SOCKET!r}; start it with "
                f"--node-config \"{SOCKET}='/path/to/node.sock'\""
            )
        )
    try:
        data = request(Path(str(path)), from_record(msg.content).encode())
        return to_record(Envelope.decode(data))
    except (EnvelopeError, ConnectionError, OSError, EOFError) as err:
        return to_record(error(f"node worker at {path}: {err}"))
