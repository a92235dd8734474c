"""A warm ClientApp executor: the node worker takes its SuperNode's tasks itself.

With ``--isolation subprocess`` (Flower's default) a SuperNode's SuperExec
starts a fresh ``flwr-clientapp`` process for every message; importing Flower
alone takes about a second there, so a round of five short messages (a task
and four secure-sum stages) costs seconds of process starts. A SuperNode
started with ``--isolation process`` leaves task execution to an external
process instead: this module is that process's loop, run inside the node
worker that already holds the backbone. It does what ``flwr-clientapp`` does
for one task — acquire it from the SuperNode's Runtime API, pull the message,
answer it, push the reply and the task's status, with a heartbeat meanwhile —
and then waits for the next one, for the whole run.

It speaks flwr 1.42's Runtime API through Flower's own client and helpers
(``flwr.supernode.runtime.run_clientapp``), which are internal to Flower: the
project pins flwr, and the stock path (:mod:`fedpeft.flower.client_app` over a
socket) remains for SuperNodes in subprocess isolation.
"""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import Callable

from flwr.app import Context, Message
from flwr.common.constant import SubStatus
from flwr.common.serde import context_from_proto
from flwr.proto.node_pb2 import Node
from flwr.proto.runtime_pb2 import (
    AcquireTaskRequest,
    PullAppMessagesRequest,
    PullTaskInputRequest,
)
from flwr.supercore.constant import TaskType
from flwr.supercore.heartbeat import HeartbeatSender, make_task_heartbeat_fn_http
from flwr.supercore.inflatable.inflatable_protobuf_utils import (
    make_confirm_message_received_fn_protobuf,
    make_pull_object_fn_protobuf,
)
from flwr.supercore.inflatable.inflatable_utils import (
    pull_and_inflate_object_from_tree,
)
from flwr.supercore.interceptors import (
    RuntimeTokenHttpInterceptor,
    RuntimeVersionHttpInterceptor,
)
from flwr.supercore.retry import make_simple_http_retry_invoker
from flwr.supercore.runtime import RuntimeHttpClient
from flwr.supernode.runtime.run_clientapp import push_message, push_task_output

from fedpeft.flower.latency import PULL_BACKOFF
from fedpeft.flower.records import from_record, to_record
from fedpeft.remote.envelope import Envelope, EnvelopeError, error

logger = logging.getLogger(__name__)

Handle = Callable[[Envelope], Envelope]


def serve_tasks(
    runtime_address: str,
    handle: Handle,
    *,
    poll: float = 0.05,
    root_certificates: bytes | None = None,
) -> None:
    """Answer the SuperNode's ClientApp tasks with ``handle`` until SIGTERM.

    Args:
        runtime_address: The SuperNode's Runtime API (its ``--port``), e.g.
            ``127.0.0.1:9094``.
        handle: The node worker's request handler.
        poll: Seconds between checks for a new task.
        root_certificates: PEM CA for a TLS Runtime API (``None``: insecure).
    """
    signal.signal(signal.SIGTERM, _exit)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per poll
    acquirer = _client(runtime_address, root_certificates, "SuperExec")
    logger.info("taking ClientApp tasks from the SuperNode at %s", runtime_address)
    try:
        while True:
            res = acquirer.AcquireTask(
                AcquireTaskRequest(
                    supported_task_types=[TaskType.CLIENT_APP], agentapp_fab_hashes=[]
                )
            )
            if res.HasField("task") and res.token:
                _run_task(runtime_address, root_certificates, res.token, handle)
            else:
                time.sleep(poll)
    finally:
        acquirer.close()


def _client(
    address: str, root_certificates: bytes | None, component: str, token: str = ""
) -> RuntimeHttpClient:
    interceptors = [RuntimeVersionHttpInterceptor(component_name=component)]
    if token:
        interceptors.append(RuntimeTokenHttpInterceptor(token))  # type: ignore[arg-type]
    return RuntimeHttpClient.from_server_address(
        server_address=address,
        insecure=root_certificates is None,
        root_certificates=root_certificates,
        interceptors=interceptors,
        retry_invoker=make_simple_http_retry_invoker(),
    )


def _run_task(
    address: str, root_certificates: bytes | None, token: str, handle: Handle
) -> None:
    """One task, as ``flwr-clientapp`` runs it (module docstring)."""
    client = _client(address, root_certificates, "flwr-clientapp", token)
    heartbeat = HeartbeatSender(make_task_heartbeat_fn_http(client))
    heartbeat.start()
    context = None
    status, details = SubStatus.FAILED, "the fedpeft node failed"
    try:
        t0 = time.perf_counter()
        message, context = _pull_task_input(client)
        t1 = time.perf_counter()
        try:
            answer = handle(from_record(message.content))
        except EnvelopeError as err:
            answer = error(f"malformed request: {err}")
        t2 = time.perf_counter()
        push_message(client, Message(to_record(answer), reply_to=message), context)
        status, details = SubStatus.COMPLETED, ""
        logger.info(
            "task: pull %.3fs, answer %.3fs, push %.3fs",
            t1 - t0,
            t2 - t1,
            time.perf_counter() - t2,
        )
    except Exception:  # a broken task must not stop the node
        logger.exception("a ClientApp task failed")
    finally:
        push_task_output(client, context, status, details)
        heartbeat.stop()
        client.close()


def _pull_task_input(client: RuntimeHttpClient) -> tuple[Message, Context]:
    """The task's message and context: ``flwr-clientapp``'s
    ``pull_task_input`` with a short retry backoff (:data:`PULL_BACKOFF`)."""
    res = client.PullTaskInput(PullTaskInputRequest())
    context = context_from_proto(res.context)
    pulled = client.PullMessages(PullAppMessagesRequest())
    if not pulled.messages_list:
        raise RuntimeError("the SuperNode handed over a task without a message")
    node = Node(node_id=context.node_id)
    tree = pulled.message_object_trees[0]
    message = pull_and_inflate_object_from_tree(
        tree,
        make_pull_object_fn_protobuf(client.PullObject, node, context.run_id),
        make_confirm_message_received_fn_protobuf(
            client.ConfirmMessageReceived, node, context.run_id
        ),
        return_type=Message,
        initial_backoff=PULL_BACKOFF[0],
        backoff_cap=PULL_BACKOFF[1],
    )
    message.metadata.__dict__["_message_id"] = tree.object_id  # as Flower does
    return message, context


def _exit(signum: int, frame: object) -> None:
    raise SystemExit(0)
