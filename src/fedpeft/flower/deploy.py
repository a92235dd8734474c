"""A whole Flower federation on this machine, brought up and down by one call.

:class:`LoopbackFederation` starts, on 127.0.0.1:

1. one fedpeft node worker per client (``fedpeft node``: backbone + shard,
   serving a Unix socket);
2. a Flower SuperLink (``flower-superlink``), with a generated self-signed
   certificate when ``tls`` is on, and SuperNode authentication when ``auth``
   is on (each SuperNode gets a generated key pair whose public key is
   registered with ``flwr supernode register`` before it starts; a SuperNode
   whose key is not registered is refused);
3. one SuperNode per client (:mod:`fedpeft.flower.supernode`), its node config
   naming its worker's socket;

then :meth:`LoopbackFederation.run` submits the fedpeft Flower app with
``flwr run`` and waits for it. Leaving the ``with`` block stops every process
it started (SIGTERM, then SIGKILL after a grace period), including the
processes Flower spawns (each is started in its own process group). Should
the process that started them die without leaving the block (SIGKILL, an
unhandled SIGTERM), a :class:`~fedpeft.flower.processes.Reaper` stops them.

The same steps by hand, for machines of their own, are in docs/flower.md.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import tomli_w

from fedpeft.config import RunConfig
from fedpeft.flower.app_bundle import APP_PYPROJECT, run_config_argument
from fedpeft.flower.certificates import node_key_pair, self_signed
from fedpeft.flower.client_app import SOCKET
from fedpeft.flower.processes import Reaper, free_port, stop_group, wait_port
from fedpeft.flower.supernode import SCALE_ENV

logger = logging.getLogger(__name__)

CONNECTION = "fedpeft"
"""Name of the SuperLink connection in the generated ``$FLWR_HOME/config.toml``."""


class DeployError(RuntimeError):
    """A part of the federation did not come up, or the run failed."""


@dataclass
class LoopbackFederation:
    """SuperLink + N SuperNodes + N node workers on this machine (module docstring).

    Attributes:
        cfg: The run configuration (written to the workspace for every process).
        nodes: Client ids to start a node for (default: every client).
        tls: Encrypt SuperLink traffic with a generated self-signed certificate.
        auth: Authenticate SuperNodes (implies ``tls``, which Flower requires
            for it): only registered node keys may join.
        sleep_scale: Scale of the SuperNode's idle sleeps
            (:mod:`fedpeft.flower.supernode`); 1.0 is Flower's default.
        poll_interval: The SuperExec's task poll interval in seconds.
        workspace: Where sockets, logs, certificates and Flower's home go
            (a new temporary directory by default; removed unless kept).
        startup_timeout: Seconds each part may take to come up.
        worker_args: Extra ``fedpeft node`` arguments per client id.
        data: Per client id a data file of its own (``fedpeft node --data``);
            when given, every node must have one and the server takes the
            nodes' n_k (``fedpeft-node-data``).
        relay: Run Flower's stock ClientApp process per message, relaying to
            the worker's socket, instead of the worker taking the SuperNode's
            tasks itself (:mod:`fedpeft.flower.executor`, the default).
    """

    cfg: RunConfig
    nodes: list[int] | None = None
    tls: bool = False
    auth: bool = False
    sleep_scale: float = 0.1
    poll_interval: float = 0.2
    workspace: Path | None = None
    startup_timeout: float = 180.0
    relay: bool = False
    worker_args: dict[int, list[str]] = field(default_factory=dict)
    data: dict[int, Path] = field(default_factory=dict)
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    reaper: Reaper | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.tls = self.tls or self.auth
        if self.nodes is None:
            self.nodes = list(range(self.cfg.federation.num_clients))
        if self.data and sorted(self.data) != sorted(self.nodes):
            raise DeployError(
                f"data files are given for clients {sorted(self.data)}, nodes are "
                f"{sorted(self.nodes)}: give every node a file of its own, or none"
            )
        self.bin = Path(sys.executable).parent
        # Unix socket paths are limited to ~100 bytes: a short temporary root.
        self.workspace = self.workspace or Path(
            tempfile.mkdtemp(prefix="fedpeft-", dir="/tmp")
        )
        self.logs = self.workspace / "logs"
        self.home = self.workspace / "flwr_home"
        self.app = self.workspace / "app"
        self.keys = self.workspace / "keys"
        for d in (self.logs, self.home, self.app, self.keys):
            d.mkdir(parents=True, exist_ok=True)
        self.config_path = self.workspace / "run.toml"
        self.config_path.write_text(tomli_w.dumps(self.cfg.to_dict()))
        (self.app / "pyproject.toml").write_text(tomli_w.dumps(APP_PYPROJECT))
        self.link_port = free_port()
        self.env = {
            **os.environ,
            "FLWR_HOME": str(self.home),
            "FLWR_TELEMETRY_ENABLED": "0",
            "FLWR_DISABLE_UPDATE_CHECK": "1",
            "FLWR_SUPEREXEC_TASK_POLL_INTERVAL": str(self.poll_interval),
            SCALE_ENV: str(self.sleep_scale),
            "PATH": f"{self.bin}{os.pathsep}{os.environ.get('PATH', '')}",
            "PYTHONUNBUFFERED": "1",
        }

    # ------------------------------------------------------------ up
    def __enter__(self) -> LoopbackFederation:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def socket_of(self, k: int) -> Path:
        assert self.workspace is not None
        return self.workspace / f"node{k}.sock"

    def start(self) -> None:
        """Workers (they load the backbone while the rest starts), SuperLink,
        SuperNodes."""
        assert self.nodes is not None
        deadline = time.monotonic() + self.startup_timeout
        self.ports = {k: free_port() for k in self.nodes}
        for k in self.nodes:
            self.start_worker(k)
        tls: list[str] = ["--insecure"]
        root: list[str] = ["--insecure"]
        connection: dict[str, Any] = {"address": f"127.0.0.1:{self.link_port}"}
        if self.tls:
            assert self.workspace is not None
            ca, cert, key = self_signed(self.workspace)
            tls = ["--ssl-ca-certfile", str(ca), "--ssl-certfile", str(cert)]
            tls += ["--ssl-keyfile", str(key)]
            root = ["--root-certificates", str(ca)]
            connection["root-certificates"] = str(ca)
        else:
            connection["insecure"] = True
        (self.home / "config.toml").write_text(
            tomli_w.dumps(
                {"superlink": {"default": CONNECTION, CONNECTION: connection}}
            )
        )
        self._spawn(
            "superlink",
            [
                str(self.bin / "flower-superlink"),
                *tls,
                *(["--enable-supernode-auth"] if self.auth else []),
                "--host",
                "127.0.0.1",
                "--port",
                str(self.link_port),
                "--disable-runtime-dependency-installation",
            ],
        )
        if not wait_port(self.link_port, deadline):
            raise DeployError(self._failure("superlink", "did not open its port"))
        self.root = root
        for k in self.nodes:
            if self.auth:
                self.register(k)
            if self.relay:
                self._wait_worker(k, deadline)
            self.start_supernode(k)

    def start_worker(self, k: int) -> None:
        """The node worker of client ``k`` (``fedpeft node``)."""
        self.socket_of(k).unlink(missing_ok=True)
        where = (
            ["--socket", str(self.socket_of(k))]
            if self.relay
            else ["--supernode", f"127.0.0.1:{self.ports[k]}"]
        )
        self._spawn(
            f"worker{k}",
            [
                sys.executable,
                "-m",
                "fedpeft.cli",
                "node",
                str(self.config_path),
                "--client-id",
                str(k),
                *where,
                *(["--data", str(self.data[k])] if k in self.data else []),
                *self.worker_args.get(k, []),
                "--set",
                f"threads={max(1, (os.cpu_count() or 1) // len(self.nodes or [1]))}",
                "--verbose",
            ],
        )

    def _wait_worker(self, k: int, deadline: float) -> None:
        sock = self.socket_of(k)
        key = sock.with_name(sock.name + ".key")
        while not (sock.exists() and key.exists()):
            proc = self.procs[f"worker{k}"]
            if proc.poll() is not None or time.monotonic() > deadline:
                raise DeployError(self._failure(f"worker{k}", "did not start"))
            time.sleep(0.1)

    def node_key(self, k: int) -> Path:
        """Client ``k``'s SuperNode private key (made on first use)."""
        private = self.keys / f"node{k}"
        if not private.exists():
            node_key_pair(self.keys, private.name)
        return private

    def register(self, k: int) -> None:
        """Register client ``k``'s SuperNode public key with the SuperLink
        (``flwr supernode register``)."""
        public = self.node_key(k).with_suffix(".pub")
        out = subprocess.run(
            [str(self.bin / "flwr"), "supernode", "register", str(public), CONNECTION],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if out.returncode != 0:
            raise DeployError(
                f"flwr supernode register {public} failed: {out.stdout}{out.stderr}"
            )

    def start_supernode(self, k: int, key: Path | None = None) -> None:
        """The SuperNode of client ``k`` (again, after :meth:`kill`: it rejoins).
        Under ``auth`` it signs in with ``key`` (default: its registered key)."""
        isolation = [] if self.relay else ["--isolation", "process"]
        auth = []
        if self.auth:
            auth = ["--auth-supernode-private-key", str(key or self.node_key(k))]
        self._spawn(
            f"supernode{k}",
            [
                sys.executable,
                "-m",
                "fedpeft.flower.supernode",
                *self.root,
                "--superlink",
                f"127.0.0.1:{self.link_port}",
                "--port",
                str(self.ports[k]),
                *isolation,
                *auth,
                "--node-config",
                f"{SOCKET}='{self.socket_of(k)}'",
            ],
        )

    def _spawn(self, name: str, cmd: list[str]) -> None:
        log: IO[bytes] = open(self.logs / f"{name}.log", "ab")  # noqa: SIM115
        with log:
            self.procs[name] = subprocess.Popen(
                cmd,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self._guard(self.procs[name])
        logger.debug("started %s: %s", name, shlex.join(cmd))

    def _guard(self, proc: subprocess.Popen[Any]) -> None:
        """Have the reaper stop ``proc``'s group if this process dies first."""
        if self.reaper is None:
            self.reaper = Reaper()
        self.reaper.guard(proc.pid)

    def _failure(self, name: str, what: str) -> str:
        tail = ""
        path = self.logs / f"{name}.log"
        if path.exists():
            tail = "\n".join(path.read_text(errors="replace").splitlines()[-15:])
        return f"{name} {what}; the end of {path}:\n{tail}"

    # ------------------------------------------------------------ run
    def run(
        self,
        *,
        resume: bool = False,
        overwrite: bool = False,
        timeout: float = 120.0,
        wall_limit: float | None = None,
        stream: IO[str] | None = None,
    ) -> str:
        """Submit the fedpeft app and wait until its run ends.

        Returns:
            ``""`` when the run completed; otherwise what Flower says went
            wrong. The ServerApp's log goes to ``stream`` and the workspace's
            logs/run.log. (``flwr run --stream`` exits 0 for failed runs too,
            so the status is read back with ``flwr ls``.)

        Args:
            timeout: Seconds the server waits for one exchange's replies.
            wall_limit: Stop the run after this many seconds (``None``: no limit).
        """
        assert self.nodes is not None
        run_config = run_config_argument(
            str(self.config_path),
            resume,
            overwrite,
            timeout,
            len(self.nodes),
            bool(self.data),
        )
        cmd = [
            str(self.bin / "flwr"),
            "run",
            str(self.app),
            CONNECTION,
            "--stream",
            "--run-config",
            run_config,
        ]
        with open(self.logs / "run.log", "a") as log:
            proc = subprocess.Popen(
                cmd,
                env=self.env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                text=True,
                start_new_session=True,
            )
            self.procs["flwr-run"] = proc  # type: ignore[assignment]
            self._guard(proc)
            started = time.monotonic()
            run_id = ""
            assert proc.stdout is not None
            for line in proc.stdout:
                log.write(line)
                log.flush()
                if stream is not None:
                    stream.write(line)
                if line.startswith("Successfully started run "):
                    run_id = line.split()[-1]
                if wall_limit and time.monotonic() - started > wall_limit:
                    stop_group(proc, 2.0)
                    raise DeployError(f"the run passed its limit of {wall_limit}s")
            if proc.wait() != 0 or not run_id:
                return f"flwr run failed (status {proc.returncode}); see {log.name}"
        return self.status(run_id)

    def status(self, run_id: str) -> str:
        """``""`` if run ``run_id`` completed, else its status and details."""
        command = [str(self.bin / "flwr"), "ls", CONNECTION, "--run-id", run_id]
        out = subprocess.run(
            [*command, "--format", "json"],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        try:
            run = json.loads(out.stdout)["runs"][0]
        except (ValueError, KeyError, IndexError):
            return f"cannot read the status of run {run_id}: {out.stdout}{out.stderr}"
        if run.get("status") == "finished:completed":
            return ""
        return f"run {run_id} {run.get('status')}: {run.get('status-details', '')}"

    # ------------------------------------------------------------ faults, down
    def kill(self, name: str) -> None:
        """SIGKILL one process and everything it started (a crash)."""
        proc = self.procs.get(name)
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            if self.reaper is not None:
                self.reaper.release(proc.pid)

    def stop(self, grace: float = 5.0) -> None:
        """Stop every process this federation started, newest first."""
        for name in reversed(list(self.procs)):
            stop_group(self.procs[name], grace)
            if self.reaper is not None:
                self.reaper.release(self.procs[name].pid)
        self.procs.clear()
        if self.reaper is not None:
            self.reaper.close()
            self.reaper = None
