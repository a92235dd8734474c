"""One data holder of a real federation: its shard, the backbone, kept warm.

A :class:`NodeWorker` is a long-lived process per client (``fedpeft node``). It
loads the backbone once and answers requests (:mod:`fedpeft.remote.envelope`)
from whatever carries them — the Flower ClientApp over a local socket
(:mod:`fedpeft.remote.socket`), or a test in this process:

* ``hello``: the node's client id and n_k, after checking that the server runs
  the same configuration and fedpeft version;
* ``task``: an :class:`~fedpeft.messages.Instruction`, carried out by the same
  client algorithm as in the embedded engine
  (:func:`fedpeft.client.algorithm.run_task`).
  Under secure aggregation the update stays here (*sealed*): only its names,
  shapes, n_k and metrics travel;
* ``secagg``: one stage of a secure sum over the kept update
  (:mod:`fedpeft.remote.secure_sum`).

The node builds the run's partition from the shared config (simulated data
holders on one corpus) and then drops every other client's examples, the
pooled training set and the test set: it holds only its own shard. A data
holder with data of its own (``fedpeft node --data FILE``) uses that file as
its shard instead (:func:`with_client_file`); the run's corpus then only gives
the label set.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

import fedpeft
from fedpeft.blackbox.client import BlackBoxClient
from fedpeft.client.algorithm import run_task
from fedpeft.config import ConfigError, RunConfig
from fedpeft.data.corpus import Corpus, load_client_file
from fedpeft.data.partition.stats import split_train_val
from fedpeft.engine.simulation import FederatedRun
from fedpeft.experiment import ClientData, Experiment, build_experiment
from fedpeft.messages import Instruction
from fedpeft.models.tokenized import tokenize
from fedpeft.remote.envelope import (
    Envelope,
    EnvelopeError,
    blob,
    error,
    instruction,
    update_envelope,
)
from fedpeft.remote.secure_client import (
    ClientSessions,
    Contribution,
    ReplaySum,
    captured_vector,
)
from fedpeft.remote.secure_wire import (
    ADVERTISE,
    KEYS,
    MASKED,
    NEXT,
    NEXT_KEYS,
    PREPARED,
    QUANTIZER,
    ROUTED,
)
from fedpeft.secagg import SecAggConfig, SecAggError
from fedpeft.seeding import stream
from fedpeft.server.aggregators import SecureSum
from fedpeft.types import ClientUpdate, Params

logger = logging.getLogger(__name__)

RUNTIME_KEYS = ("threads",)
"""Config keys each process may set for itself (not part of the digest)."""


def config_digest(cfg: RunConfig) -> str:
    """A fingerprint of everything that must agree between server and clients."""
    data = cfg.model_dump(mode="json")
    for key in RUNTIME_KEYS:
        data.pop(key, None)
    text = json.dumps(data, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def only_shard(exp: Experiment, client_id: int) -> Experiment:
    """``exp`` reduced to what client ``client_id`` holds: its own split; every
    other client, the pooled training set and the test set are emptied."""
    own = exp.clients[client_id]
    none = own.train.subset(np.zeros(0, np.int64))
    empty = ClientData(none, none)
    mine = exp.partition[client_id]
    corpus = exp.corpus.subsets(mine, np.zeros(0, np.int64))
    return dataclasses.replace(
        exp,
        corpus=corpus,
        train=own.train,
        test=none,
        partition=[p if k == client_id else p[:0] for k, p in enumerate(exp.partition)],
        clients=[own if k == client_id else empty for k in range(len(exp.clients))],
    )


def with_client_file(exp: Experiment, client_id: int, spec: str) -> Experiment:
    """``exp`` with client ``client_id``'s shard read from its own file
    (``csv:PATH`` / ``jsonl:PATH``), split into train and validation as the
    run splits every shard (same fraction, same per-client seed stream)."""
    cfg = exp.config
    d = cfg.data
    if not isinstance(exp.corpus, Corpus):
        raise ConfigError(
            f"a data holder's own file ({spec}) holds texts; {exp.corpus.name} is "
            "images: give every node the image source in data.corpus instead"
        )
    texts = load_client_file(
        spec,
        exp.corpus.label_names,
        text_column=d.text_column,
        label_column=d.label_column,
        max_chars=d.max_chars,
        encoding=d.encoding,
    )
    rows = np.arange(len(texts), dtype=np.int64)
    data = tokenize(exp.backbone, texts.texts, texts.labels, cfg.model.max_length)
    tr, va = split_train_val(
        rows, cfg.partition.val_fraction, stream(cfg.seed, "split", client_id)
    )
    clients = list(exp.clients)
    clients[client_id] = ClientData(data.subset(tr), data.subset(va))
    partition = list(exp.partition)
    partition[client_id] = rows
    return dataclasses.replace(
        exp,
        corpus=dataclasses.replace(exp.corpus, train=texts),
        partition=partition,
        clients=clients,
    )


@dataclass
class NodeWorker:
    """Client ``client_id`` of the run ``cfg`` (module docstring).

    Attributes:
        cfg: The run configuration (the server's must have the same digest).
        client_id: Which client of the run's partition this node is.
        build: Builds the experiment (tests pass a prepared one).
        data: This holder's own data file (``csv:PATH`` / ``jsonl:PATH``)
            instead of its shard of the run's partition.
    """

    cfg: RunConfig
    client_id: int
    build: Callable[[RunConfig], Experiment] = build_experiment
    data: str | None = None
    kept: dict[tuple[str, int], tuple[Params, ClientUpdate]] = field(
        default_factory=dict
    )

    def __post_init__(self) -> None:
        exp = self.build(self.cfg)
        if not 0 <= self.client_id < len(exp.clients):
            raise ValueError(
                f"client id {self.client_id} is outside this run's "
                f"{len(exp.clients)} clients (federation.num_clients); start the "
                "node with a partition id in range"
            )
        if self.data is not None:
            exp = with_client_file(exp, self.client_id, self.data)
        sizes = [len(c.train) for c in exp.clients]
        self.replay: ReplaySum | None = None

        def replay_sum(config: SecAggConfig, seed: int) -> SecureSum:
            self.replay = ReplaySum(config, seed)
            return self.replay

        run = FederatedRun(exp, secure_sum=replay_sum)
        mine = only_shard(exp, self.client_id)
        run.experiment = mine
        run.client.data_for = run.client_data  # the node's shard (poisoned if so set)
        if isinstance(run.algorithm, BlackBoxClient):
            run.algorithm.data_for = run.client.data_for
        del exp
        self.num_examples = sizes[self.client_id]
        self.client = run.algorithm
        self.server = run.loop.server
        self.sealed = self.replay is not None
        self.digest = config_digest(self.cfg)
        self.sessions = ClientSessions(
            self.client_id, self.cfg.seed, self.cfg.privacy.secure, self._vector
        )

    def handle(self, env: Envelope) -> Envelope:
        """Answer one request; a bad request or a failing task gets an error
        reply and leaves the node's state as it was."""
        try:
            if env.kind == "hello":
                return self._hello(env)
            if env.kind == "task":
                reply = self._task(instruction(env))
                return self._secure_riders(env, reply) if self.sealed else reply
            if env.kind == "secagg":
                if not self.sealed:
                    raise ValueError("this run has no secure aggregation")
                return self.sessions.handle(env)
            raise EnvelopeError(f"a node does not answer {env.kind!r} messages")
        except (EnvelopeError, SecAggError, ValueError, RuntimeError, KeyError) as err:
            logger.warning("client %d: %s", self.client_id, err)
            return error(f"client {self.client_id}: {type(err).__name__}: {err}")
        except MemoryError as err:
            return error(f"client {self.client_id}: out of memory ({err})")

    def _hello(self, env: Envelope) -> Envelope:
        digest = env.header.get("digest")
        version = env.header.get("version")
        if version != fedpeft.__version__:
            raise ValueError(
                f"the server runs fedpeft {version}, this node {fedpeft.__version__}; "
                "install the same version on both sides"
            )
        if digest != self.digest:
            raise ValueError(
                f"the server's run configuration (digest {digest}) differs from "
                f"this node's ({self.digest}); start the node from the same "
                "config file and --set options as the server"
            )
        return Envelope(
            "reply",
            {
                "client_id": self.client_id,
                "num_examples": self.num_examples,
                "digest": self.digest,
                "version": fedpeft.__version__,
            },
        )

    def _task(self, ins: Instruction) -> Envelope:
        if ins.client_id != self.client_id:
            raise ValueError(
                f"this node holds client {self.client_id}, not client {ins.client_id}"
            )
        update = run_task(self.client, ins)
        for name, value in update.delta.items():
            if not np.all(np.isfinite(value)):
                raise ValueError(f"local training produced non-finite {name!r}")
        if self.sealed:
            for key in [k for k in self.kept if k[0] == ins.task]:
                del self.kept[key]  # only the latest of each task is needed
            self.kept[(ins.task, ins.round)] = (ins.payload, update)
        return update_envelope(update, self.sealed)

    def _secure_riders(self, env: Envelope, reply: Envelope) -> Envelope:
        """``reply`` with what secure sums have riding on a task's reply
        (:mod:`fedpeft.remote.secure_sum`): the masked input of a pass 0 whose
        shares went ahead, pass 0's keys, the next merge's keys."""
        h = env.header
        scope, rnd = str(h["task"]), int(h["round"])
        head, arrays = dict(reply.header), dict(reply.arrays)
        if h.get(PREPARED) and ROUTED in env.arrays:
            try:
                masked, head[QUANTIZER] = self.sessions.mask_ahead(
                    scope, rnd, str(h[PREPARED]), env.arrays[ROUTED].tobytes()
                )
                arrays[MASKED] = blob(masked)
            except (SecAggError, ValueError) as err:
                logger.warning(
                    "client %d: cannot mask its update (%s); the server will "
                    "leave it out of the sum",
                    self.client_id,
                    err,
                )
        if h.get(ADVERTISE):
            head[KEYS] = self.sessions.advertise_early(scope, rnd)
        if isinstance(nxt := h.get(NEXT), list) and len(nxt) == 2:
            head[NEXT_KEYS] = self.sessions.advertise_early(str(nxt[0]), int(nxt[1]))
        return Envelope("reply", head, arrays)

    def _vector(
        self, scope: str, rnd: int, index: int, published: list[Params]
    ) -> Contribution:
        """This client's input to pass ``index`` of the server's merge of
        ``(scope, rnd)``: the merge replayed on the kept update."""
        if (scope, rnd) not in self.kept:
            raise ValueError(f"no {scope} update of round {rnd} is kept here")
        params, update = self.kept[(scope, rnd)]
        assert self.replay is not None
        server = self.server

        def merge() -> object:
            if scope == "fit":
                return server.merge(rnd, params, [update])
            return server.merge_warm_start(scope, params, [update])  # type: ignore[arg-type]

        vector, config = captured_vector(merge, self.replay, published, index)
        for name, value in vector.items():
            if not np.all(np.isfinite(value)) or not math.isfinite(
                float(np.abs(value).max(initial=0.0))
            ):
                raise ValueError(f"secure-sum input {name!r} is not finite")
        return vector, config
