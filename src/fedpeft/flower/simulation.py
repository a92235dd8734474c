"""The same round loop on Flower's simulation engine (Ray).

For users who want Flower's engine: ``run_simulation`` starts one ServerApp
(fedpeft's, :func:`fedpeft.flower.server_app.serve`) and N virtual SuperNodes
whose messages Ray actors answer. Each actor process loads the backbone and
the partition once (module-level caches below) and keeps one
:class:`~fedpeft.remote.node.NodeWorker` per client it has served, so a
client's kept update (secure aggregation) survives between its messages.

The embedded engine is faster for the same work (it batches clients on one
backbone, docs/benchmarks.md); this path is for runs that must go through
Flower's engine.
"""

from __future__ import annotations

import logging
from typing import Any

from flwr.app import Context, Message
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp

from fedpeft.client.algorithm import GradientClient
from fedpeft.client.flops import FlopMeter
from fedpeft.config import RunConfig
from fedpeft.experiment import Experiment, build_experiment
from fedpeft.flower.records import from_record, to_record
from fedpeft.flower.server_app import serve
from fedpeft.remote.envelope import EnvelopeError, error
from fedpeft.remote.node import NodeWorker, config_digest

logger = logging.getLogger(__name__)

_EXPERIMENTS: dict[str, Experiment] = {}
_NODES: dict[tuple[str, int], NodeWorker] = {}
_METERS: dict[str, FlopMeter | None] = {}


def node_for(cfg: RunConfig, client_id: int) -> NodeWorker:
    """Client ``client_id``'s node in this process (built on first use)."""
    digest = config_digest(cfg)
    key = (digest, client_id)
    if key not in _NODES:
        if digest not in _EXPERIMENTS:
            _EXPERIMENTS[digest] = build_experiment(cfg)
        exp = _EXPERIMENTS[digest]
        node = NodeWorker(cfg, client_id, build=lambda _: exp)
        # one FLOP meter per process: each step shape is measured once, not
        # once per client (measuring runs the step under a FLOP counter)
        if isinstance(node.client, GradientClient):
            node.client.flops = _METERS.setdefault(digest, node.client.flops)
        _NODES[key] = node
    return _NODES[key]


def client_app(cfg: RunConfig) -> ClientApp:
    """A ClientApp answering as the client named by its node's ``partition-id``."""
    app = ClientApp()

    @app.query()
    def query(msg: Message, context: Context) -> Message:
        try:
            request = from_record(msg.content)
            answer = node_for(cfg, int(context.node_config["partition-id"])).handle(
                request
            )
        except EnvelopeError as err:
            answer = error(f"malformed request: {err}")
        return Message(to_record(answer), reply_to=msg)

    return app


def server_app(cfg: RunConfig, timeout: float, out: dict[str, Any]) -> ServerApp:
    """fedpeft's ServerApp for ``cfg``; the summary lands in ``out``."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        out["summary"] = serve(
            grid, cfg, timeout=timeout, nodes=cfg.federation.num_clients
        )

    return app


def simulate(
    cfg: RunConfig, *, cpus_per_client: float = 1.0, timeout: float = 600.0
) -> dict[str, Any]:
    """Run ``cfg`` on Flower's simulation engine; its summary.

    Raises:
        RuntimeError: the run did not finish (Flower logs why).
    """
    from flwr.simulation import run_simulation

    out: dict[str, Any] = {}
    run_simulation(
        server_app=server_app(cfg, timeout, out),
        client_app=client_app(cfg),
        num_supernodes=cfg.federation.num_clients,
        backend_config={
            "client_resources": {"num_cpus": cpus_per_client, "num_gpus": 0.0}
        },
    )
    if "summary" not in out:
        raise RuntimeError("the Flower simulation ended without a result; see its log")
    summary: dict[str, Any] = out["summary"]
    return summary
