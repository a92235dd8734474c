"""The node worker's local socket: how a short-lived ClientApp process reaches
the long-lived process that holds the backbone.

Flower starts a fresh ClientApp process for every message; loading torch,
transformers and the backbone there would cost seconds per message. Instead the
ClientApp forwards each request's bytes over a Unix socket to the node worker
(:class:`~fedpeft.remote.node.NodeWorker`), which stays up for the whole run.
The socket is authenticated (HMAC challenge of
:mod:`multiprocessing.connection`) with a random key written next to it,
readable by the owner only; only raw bytes cross it (never pickles).
"""

from __future__ import annotations

import logging
import os
import secrets
import signal
from collections.abc import Callable
from multiprocessing import AuthenticationError
from multiprocessing.connection import Client, Connection, Listener
from pathlib import Path

from fedpeft.remote.envelope import Envelope, EnvelopeError, error

logger = logging.getLogger(__name__)


Handle = Callable[[Envelope], Envelope]
"""What answers one request."""


def key_path(socket: Path) -> Path:
    """Where the socket's authentication key lives."""
    return socket.with_name(socket.name + ".key")


def serve(handle: Handle, socket: Path) -> None:
    """Answer requests on ``socket`` one at a time until SIGTERM or SIGINT.
    The socket and its key are removed on exit.

    Raises:
        FileExistsError: the socket path is taken (another node runs there).
    """
    if socket.exists():
        raise FileExistsError(
            f"{socket} exists: another node serves there, or one crashed; "
            "pick another --socket or remove the stale file"
        )
    key = secrets.token_bytes(32)
    kpath = key_path(socket)
    fd = os.open(kpath, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key)
    signal.signal(signal.SIGTERM, _exit)
    listener = Listener(str(socket), "AF_UNIX", authkey=key)
    try:
        logger.info("node serving on %s", socket)
        while True:
            try:
                conn = listener.accept()
            except (OSError, EOFError, AuthenticationError) as err:  # a bad handshake
                logger.warning("refused a connection on %s: %s", socket, err)
                continue
            with conn:
                _answer(handle, conn)
    finally:
        listener.close()
        kpath.unlink(missing_ok=True)
        socket.unlink(missing_ok=True)


def _exit(signum: int, frame: object) -> None:
    raise SystemExit(0)


def _answer(handle: Handle, conn: Connection) -> None:
    try:
        data = conn.recv_bytes()
    except (OSError, EOFError):
        return
    try:
        reply = handle(Envelope.decode(data))
    except EnvelopeError as err:
        reply = error(f"malformed request: {err}")
    try:
        conn.send_bytes(reply.encode())
    except OSError as err:
        logger.warning("the requester left before the reply: %s", err)


def request(socket: Path, data: bytes, timeout: float | None = None) -> bytes:
    """Send one encoded request to the node at ``socket``; its encoded reply.

    Raises:
        ConnectionError: no node serves there (with the fix in the message).
    """
    try:
        key = key_path(socket).read_bytes()
        conn = Client(str(socket), "AF_UNIX", authkey=key)
    except (FileNotFoundError, ConnectionRefusedError) as err:
        raise ConnectionError(
            f"no fedpeft node serves on {socket} ({err}); start it with "
            "`fedpeft node --socket ...` before the SuperNode"
        ) from None
    except AuthenticationError:
        raise ConnectionError(
            f"the node on {socket} refused our key {key_path(socket)}: another "
            "node serves there now; restart the SuperNode's relay"
        ) from None
    with conn:
        conn.send_bytes(data)
        if timeout is not None and not conn.poll(timeout):
            raise ConnectionError(f"the node on {socket} did not answer in {timeout}s")
        return conn.recv_bytes()
