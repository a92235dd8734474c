"""``fedpeft node`` and ``fedpeft deploy``: running on a real Flower federation.

``fedpeft deploy`` brings a whole federation up on this machine (SuperLink,
one SuperNode and one node worker per client), runs the experiment on it and
takes everything down again. ``fedpeft node`` is the node worker alone, for
federations whose parts run on machines of their own (docs/flower.md).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from fedpeft.cli_console import (
    ConfigArg,
    SetOption,
    VerboseOption,
    get_ui,
    setup_logging,
    user_errors,
)
from fedpeft.config import RunConfig, load_config
from fedpeft.remote.envelope import Envelope

logger = logging.getLogger(__name__)

Handle = Callable[[Envelope], Envelope]

FLOWER_OVERRIDES = ("federation.eval_clients=false", "baselines.run=[]")
"""What a real federation's server cannot do: it holds no client data."""


def node(
    ctx: typer.Context,
    config: ConfigArg = None,
    overrides: SetOption = None,
    client_id: Annotated[
        int, typer.Option("--client-id", help="Which client of the partition this is.")
    ] = 0,
    supernode: Annotated[
        str | None,
        typer.Option(
            "--supernode",
            help="Take the ClientApp tasks of the SuperNode whose Runtime API is "
            "at this address (a SuperNode started with --isolation process).",
        ),
    ] = None,
    socket: Annotated[
        Path | None,
        typer.Option(
            "--socket",
            help="Instead, serve this Unix socket for the stock ClientApp "
            "(fedpeft.flower.client_app) of a SuperNode in subprocess isolation.",
        ),
    ] = None,
    data: Annotated[
        str | None,
        typer.Option(
            "--data",
            help="This data holder's own examples (a .csv or .jsonl file, or "
            "csv:PATH / jsonl:PATH, with the config's text and label columns) "
            "instead of its shard of the config's corpus. The server must be "
            "told (run config fedpeft-node-data=true; fedpeft deploy does it).",
        ),
    ] = None,
    exit_at: Annotated[
        str | None,
        typer.Option(
            "--exit-at",
            hidden=True,
            help="Fault drill: the process dies (exit 70) when training round R "
            "reaches STAGE (ROUND:STAGE; STAGE a secure-sum stage or 'task').",
        ),
    ] = None,
    verbose: VerboseOption = False,
) -> None:
    """Serve one client of a Flower federation: load the backbone and this
    client's shard once, then answer every message of the run.

    Start it with the same config (and --set options) as the server. Either
    the SuperNode runs with --isolation process and this node takes its tasks
    (--supernode 127.0.0.1:PORT, the faster way), or the SuperNode runs the
    stock ClientApp with --node-config "fedpeft-socket='SOCKET'" and this node
    serves that socket (--socket SOCKET).
    """
    from fedpeft.engine.host import configure_host
    from fedpeft.remote.node import NodeWorker

    ui = get_ui(ctx)
    setup_logging(ui.err, verbose=verbose)
    with user_errors(ui, ValueError):
        cfg = load_config(config, overrides or [])
        configure_host(cfg)
        if (supernode is None) == (socket is None):
            raise typer.BadParameter("give exactly one of --supernode and --socket")
        worker = NodeWorker(cfg, client_id, data=data)
        ui.err.print(f"client {client_id}: {worker.num_examples} examples")
    handle = worker.handle if exit_at is None else crash_at(worker.handle, exit_at)
    if supernode is not None:
        from fedpeft.flower.executor import serve_tasks

        serve_tasks(supernode, handle)
    else:
        from fedpeft.remote.socket import serve

        assert socket is not None
        serve(handle, socket.absolute())


def deploy(
    ctx: typer.Context,
    config: ConfigArg = None,
    overrides: SetOption = None,
    tls: Annotated[
        bool,
        typer.Option("--tls", help="TLS to the SuperLink (self-signed certificate)."),
    ] = False,
    auth: Annotated[
        bool,
        typer.Option(
            "--auth",
            help="SuperNode authentication: generated node keys, registered with "
            "the SuperLink (implies --tls).",
        ),
    ] = False,
    node_data: Annotated[
        list[Path] | None,
        typer.Option(
            "--node-data",
            help="Each client's own data file (.csv/.jsonl), in client-id order: "
            "repeat once per client. The config's corpus then gives only the "
            "labels and the server's test set.",
        ),
    ] = None,
    timeout: Annotated[
        float,
        typer.Option(help="Seconds the server waits for the clients' replies."),
    ] = 120.0,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue from the last checkpoint.")
    ] = False,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace the run in the run directory.")
    ] = False,
    keep: Annotated[
        bool,
        typer.Option("--keep-workspace", help="Keep logs, sockets and certificates."),
    ] = False,
    verbose: VerboseOption = False,
) -> None:
    """Run the experiment on a Flower federation on this machine: a SuperLink,
    one SuperNode and one node worker per client, on 127.0.0.1.

    The server never sees client data: client evaluation and the pooled-data
    baselines are off. Results go to the run directory, as with fedpeft run.
    """
    import json
    import shutil

    from fedpeft.flower.deploy import DeployError, LoopbackFederation
    from fedpeft.flower.server_app import check_flower_config
    from fedpeft.reporting.tables import render_run_summary

    ui = get_ui(ctx)
    setup_logging(ui.err, verbose=verbose)
    with user_errors(ui):
        cfg = flower_config(config, overrides or [])
        check_flower_config(cfg)
        files = list(node_data or [])
        if files and len(files) != cfg.federation.num_clients:
            raise typer.BadParameter(
                f"{len(files)} --node-data files for {cfg.federation.num_clients} "
                "clients (federation.num_clients); give one per client"
            )
        for path in files:
            if not path.is_file():
                raise typer.BadParameter(f"--node-data {path}: no such file")
    fed = LoopbackFederation(
        cfg, tls=tls, auth=auth, data={k: p.absolute() for k, p in enumerate(files)}
    )
    ui.err.print(
        f"deploying {cfg.federation.num_clients} clients on 127.0.0.1 "
        f"(workspace {fed.workspace})"
    )
    try:
        with fed:
            failure = fed.run(
                resume=resume,
                overwrite=overwrite,
                timeout=timeout,
                stream=sys.stderr if verbose else None,
            )
    except DeployError as err:
        ui.error(f"{err}\n(logs kept in {fed.logs})", title="deploy failed")
        raise typer.Exit(1) from None
    if failure:
        ui.error(f"{failure}\n(logs kept in {fed.logs})", title="run failed")
        raise typer.Exit(1)
    if not keep:
        shutil.rmtree(fed.workspace or "", ignore_errors=True)
    summary = json.loads((cfg.run_dir / "summary.json").read_text())
    render_run_summary(summary, ui.out, run_dir=cfg.run_dir)


def crash_at(handle: Handle, when: str) -> Handle:
    """``handle`` that kills its process at ``ROUND:STAGE`` of a training
    round, STAGE a secure-sum stage or ``task`` (its training) (a client
    vanishing mid-round, for fault drills)."""
    import os

    rnd, _, stage = when.partition(":")

    def handle_or_die(env: Envelope) -> Envelope:
        h = env.header
        here: tuple[object, str, object]
        if env.kind == "task":
            here = (h.get("task"), str(h.get("round")), "task")
        else:
            here = (h.get("scope"), str(h.get("round")), h.get("stage"))
        if env.kind in ("task", "secagg") and here == ("fit", rnd, stage):
            logger.warning("fault drill: exiting at %s", when)
            os._exit(70)
        return handle(env)

    return handle_or_die


def flower_config(config: Path | None, overrides: list[str]) -> RunConfig:
    """The run config with what a Flower server cannot do turned off (unless
    the user set it, which :func:`check_flower_config` then refuses)."""
    given = {o.split("=", 1)[0].strip() for o in overrides}
    extra = [o for o in FLOWER_OVERRIDES if o.split("=", 1)[0] not in given]
    return load_config(config, [*extra, *overrides])
