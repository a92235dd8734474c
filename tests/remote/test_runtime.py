"""The round loop with clients behind a message boundary (remote runtime,
nodes in this process): the same result as the embedded engine, secure sums
run as real protocol stages over the messages, and failures that drop a
client instead of the round."""

from __future__ import annotations

import csv
import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pytest

from fedpeft.engine.simulation import FederatedRun
from fedpeft.experiment import Experiment
from fedpeft.remote.envelope import Envelope
from fedpeft.remote.node import NodeWorker, config_digest
from fedpeft.remote.runtime import FederationError, LocalTransport, RemoteRuntime
from fedpeft.remote.secure_sum import RemoteSum
from fedpeft.remote.secure_wire import MASKED, QUANTIZER
from fedpeft.secagg import SecAggConfig
from fedpeft.server.aggregators import SecureSum
from tests.conftest import TINY_BLACKBOX, tiny_config


def _experiment(exp: Experiment, tmp_path: object, *extra: str) -> Experiment:
    cfg = tiny_config(tmp_path, "federation.batch_clients=false", *extra)
    return dataclasses.replace(exp, config=cfg)


def _remote(
    exp: Experiment, ahead: bool = True, **transport: object
) -> tuple[FederatedRun, LocalTransport]:
    """A federated run of ``exp`` whose clients are nodes behind messages
    (``ahead``: secure sums run their first stages ahead where they can)."""
    nodes = [
        NodeWorker(exp.config, k, build=lambda _: exp) for k in range(len(exp.clients))
    ]
    local = LocalTransport(nodes, **transport)  # type: ignore[arg-type]
    holder: dict[str, RemoteSum] = {}

    def secure_sum(config: SecAggConfig, seed: int) -> SecureSum:
        holder["sum"] = RemoteSum(config, seed, exchange=local.exchange)
        return holder["sum"]

    runtime = RemoteRuntime(local)
    run = FederatedRun(exp, runtime=lambda _: runtime, secure_sum=secure_sum)
    runtime.secure = holder.get("sum")
    runtime.lookahead = run.loop.next_merge if ahead else None
    runtime.connect(config_digest(exp.config), [len(c.train) for c in exp.clients])
    return run, local


def _max_diff(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> float:
    assert a.keys() == b.keys()
    return max(float(np.abs(a[k] - b[k]).max()) for k in a)


def test_plain_remote_run_equals_embedded(
    tiny_experiment: Experiment, tmp_path: object
) -> None:
    exp = _experiment(tiny_experiment, tmp_path)
    embedded = FederatedRun(exp).run()
    remote, _ = _remote(exp)
    result = remote.run()
    assert _max_diff(result.params, embedded.params) == 0.0
    assert [r["test_accuracy"] for r in result.history] == [
        r["test_accuracy"] for r in embedded.history
    ]
    # every byte that crossed the boundary is counted, both ways
    assert all(r["bytes_up"] > 0 and r["bytes_down"] > 0 for r in result.history)


@pytest.mark.parametrize(
    ("attack", "warm_start"),
    [("sign-flip", "mean"), ("label-flip", "mean"), ("label-flip", "rule")],
)
def test_attackers_behind_messages_act_as_in_process(
    tiny_experiment: Experiment, tmp_path: object, attack: str, warm_start: str
) -> None:
    """Attackers are client algorithms: a node of an attacking client poisons
    its reply (or trains on flipped labels) exactly as the embedded engine's;
    the robust warm start merges the nodes' class statistics as in process."""
    exp = _experiment(
        tiny_experiment,
        tmp_path,
        f"attack.kind={attack}",
        "attack.fraction=0.5",
        "attack.scale=3",
        "robust.rule=median",
        f"robust.warm_start={warm_start}",
        "federation.update_norm_ratio=0",
    )
    embedded = FederatedRun(exp).run()
    clean = FederatedRun(_experiment(tiny_experiment, tmp_path)).run()
    remote, _ = _remote(exp)
    result = remote.run()
    assert _max_diff(result.params, embedded.params) == 0.0
    assert _max_diff(result.params, clean.params) > 1e-3  # the attack did act


@pytest.mark.parametrize("strategy", ["fedavg", "dynamic"])
def test_secure_remote_run_matches_embedded(
    tiny_experiment: Experiment, tmp_path: object, strategy: str
) -> None:
    """Secure sums run as protocol stages between server and nodes; the
    server never receives a client's update, yet reaches the embedded
    engine's result within the quantizer's error."""
    exp = _experiment(
        tiny_experiment,
        tmp_path,
        "privacy.secagg=true",
        f"strategy.name={strategy}",
        *(["strategy.distance_scale=mean"] if strategy == "dynamic" else []),
    )
    embedded = FederatedRun(exp).run()
    remote, local = _remote(exp)
    stages: list[tuple[int, int, str]] = []
    exchange = local.exchange

    def recording(requests: Mapping[int, Envelope]) -> dict[int, Envelope | str]:
        for env in requests.values():
            if env.kind == "secagg":
                h = env.header
                stages.append((h["round"], h["pass"], h["stage"]))
        return exchange(requests)

    secure = remote.loop.runtime.secure  # type: ignore[attr-defined]
    secure.exchange = recording
    result = remote.run()
    assert _max_diff(result.params, embedded.params) < 1e-4
    fit = result.history[1]
    passes = 3 if strategy == "dynamic" else 1
    assert fit["secagg_passes"] == passes
    assert fit["bytes_up"] > 0
    # pass 0's keys and shares went ahead with the merge before, its masked
    # inputs came with the task's replies; later passes run every stage
    per_round = sorted({(p, st) for r, p, st in stages if r == 1})
    assert [st for p, st in per_round if p == 0] == ["unmask"]
    assert {p for p, st in per_round if st == "advertise"} == set(range(1, passes))
    # and every stage an exchange of its own gives the same sum to the bit
    stages.clear()
    early, local = _remote(exp, ahead=False)
    early.loop.runtime.secure.exchange = recording  # type: ignore[attr-defined]
    exchange = local.exchange
    assert _max_diff(early.run().params, result.params) == 0.0
    per_round = sorted({(p, st) for r, p, st in stages if r == 1})
    assert [st for p, st in per_round if p == 0] == ["mask", "share", "unmask"]


@pytest.mark.parametrize("secagg", [False, True], ids=["plain", "secure"])
def test_lda_warm_start_behind_messages_equals_embedded(
    tiny_experiment: Experiment, tmp_path: object, secagg: bool
) -> None:
    """The lda warm start's candidate heads ride on the calibration requests
    and its (candidate, temperature) sums come back, sealed under secure
    aggregation: round 0 equals the embedded engine's."""
    exp = _experiment(
        tiny_experiment,
        tmp_path,
        "peft.head_init=lda",
        f"privacy.secagg={str(secagg).lower()}",
    )
    embedded, _ = FederatedRun(exp).loop.initial_round()
    remote, _ = _remote(exp)
    params, record = remote.initial_round()
    assert record["warm_start_shrinkage"] > 0
    assert _max_diff(params, embedded) < (1e-4 if secagg else 1e-6)


def test_sealed_replies_carry_no_update(
    tiny_experiment: Experiment, tmp_path: object
) -> None:
    exp = _experiment(tiny_experiment, tmp_path, "privacy.secagg=true")
    node = NodeWorker(exp.config, 1, build=lambda _: exp)
    run = FederatedRun(exp)
    ins = run.loop.server.instructions(1, "fit", run.loop.initial, [1])[0]
    from fedpeft.remote.envelope import task_envelope

    reply = node.handle(task_envelope(ins))
    assert reply.kind == "reply" and reply.header["sealed"]
    assert reply.arrays == {}
    assert set(reply.header["shapes"]) == set(ins.payload)


def _secure_round_one(exp: Experiment, tmp_path: object) -> Experiment:
    """One secure round of every client."""
    return _experiment(
        exp,
        tmp_path,
        "privacy.secagg=true",
        "federation.rounds=1",
        "strategy.fraction_fit=1.0",
    )


def _round_one_is_the_mean_without(
    exp: Experiment, remote: FederatedRun, local: LocalTransport, gone: int
) -> dict[str, object]:
    """Run round 0 and 1; assert round 1's state is the plain mean of every
    client's update but ``gone``'s. Round 1's record."""
    params0, _ = remote.initial_round()
    params1, record = remote.run_round(1, params0)
    survivors = [n for n in local.nodes if n.client_id != gone]
    updates = [n.kept[("fit", 1)][1] for n in survivors]
    plain = FederatedRun(exp).loop.server.strategy.aggregate(1, params0, updates)[0]
    assert _max_diff(params1, plain) < 1e-5
    return record


@pytest.mark.parametrize(
    ("ahead", "stage", "accepted"),
    [(True, "task", [0, 1, 3]), (False, "mask", [0, 1, 2, 3])],
    ids=["in-training-after-sharing-ahead", "at-the-mask-stage"],
)
def test_client_vanishing_mid_secure_sum_is_recovered(
    tiny_experiment: Experiment,
    tmp_path: object,
    ahead: bool,
    stage: str,
    accepted: list[int],
) -> None:
    """Client 2 vanishes in round 1 after sharing its keys: in training (its
    shares went ahead with the warm start's last sum), or when asked for its
    masked input. The round completes with the other clients' sum, exactly
    their plain mean: its masks are rebuilt from its shares."""
    exp = _secure_round_one(tiny_experiment, tmp_path)
    remote, local = _remote(exp, ahead=ahead, fail_at={2: (1, stage)})
    record = _round_one_is_the_mean_without(exp, remote, local, 2)
    assert record["accepted_clients"] == accepted
    assert record["secagg_dropped"] == 1


@pytest.mark.parametrize("garble", ["quantizer", "truncated", "missing"])
def test_a_bad_masked_input_on_a_task_reply_leaves_out_only_its_client(
    tiny_experiment: Experiment, tmp_path: object, garble: str
) -> None:
    """A masked input that rides on a task reply made for another quantizer,
    truncated, or missing: that client is left out of the sum (its masks are
    rebuilt from its shares) and the round goes on with the others."""
    exp = _secure_round_one(tiny_experiment, tmp_path)
    remote, local = _remote(exp)
    exchange = local.exchange

    def tamper(requests: Mapping[int, Envelope]) -> dict[int, Envelope | str]:
        out = exchange(requests)
        reply = out.get(1)
        if requests[1].header.get("task") == "fit" and isinstance(reply, Envelope):
            head, arrays = dict(reply.header), dict(reply.arrays)
            assert MASKED in arrays  # round 1's pass 0 went ahead
            if garble == "quantizer":
                head[QUANTIZER] = [1, 2, 3, 4.0]
            elif garble == "truncated":
                arrays[MASKED] = arrays[MASKED][:-3]
            else:
                del arrays[MASKED]
            out[1] = Envelope(reply.kind, head, arrays)
        return out

    local.exchange = tamper  # type: ignore[method-assign]
    record = _round_one_is_the_mean_without(exp, remote, local, 1)
    assert record["secagg_dropped"] == 1


def test_node_refuses_a_different_config(
    tiny_experiment: Experiment, tmp_path: object
) -> None:
    exp = _experiment(tiny_experiment, tmp_path)
    other = _experiment(tiny_experiment, tmp_path, "client.lr=0.5")
    nodes: Sequence[NodeWorker] = [NodeWorker(other.config, 0, build=lambda _: other)]
    runtime = RemoteRuntime(LocalTransport(nodes))
    with pytest.raises(FederationError, match="differs from this node"):
        runtime.connect(config_digest(exp.config), [len(c.train) for c in exp.clients])


def test_node_holds_only_its_shard(
    tiny_experiment: Experiment, tmp_path: object
) -> None:
    exp = _experiment(tiny_experiment, tmp_path)
    node = NodeWorker(exp.config, 3, build=lambda _: exp)
    data = [node.client.data_for(k) for k in range(len(exp.clients))]
    assert [len(d.train) for d in data[:3]] == [0, 0, 0]
    assert len(data[3].train) == len(exp.clients[3].train)


def test_bad_requests_get_errors_and_change_nothing(
    tiny_experiment: Experiment, tmp_path: object
) -> None:
    exp = _experiment(tiny_experiment, tmp_path, "privacy.secagg=true")
    node = NodeWorker(exp.config, 0, build=lambda _: exp)
    assert (
        "holds client 0, not client 1"
        in node.handle(
            Envelope("task", {"client_id": 1, "round": 1, "task": "fit"})
        ).error
    )
    assert (
        "unknown task"
        in node.handle(
            Envelope("task", {"client_id": 0, "round": 1, "task": "steal"})
        ).error
    )
    assert (
        "without advertise"
        in node.handle(
            Envelope(
                "secagg",
                {"stage": "mask", "scope": "fit", "round": 1, "pass": 0, "index": 0},
                {"blob": np.zeros(3, np.uint8)},
            )
        ).error
    )
    assert node.kept == {}


def test_oversized_and_wrongly_shaped_replies_are_dropped(
    tiny_experiment: Experiment, tmp_path: object
) -> None:
    exp = _experiment(tiny_experiment, tmp_path)
    remote, _ = _remote(exp)
    runtime = remote.loop.runtime
    assert isinstance(runtime, RemoteRuntime)
    ins = remote.loop.server.instructions(1, "fit", remote.loop.initial, [0, 1])
    runtime.reply_limit = 1000
    replies = runtime.run(ins)
    assert all(r.update is None and "exceeds the limit" in r.error for r in replies)
    runtime.reply_limit = 1 << 28
    wrong = [
        dataclasses.replace(i, payload={k: v[..., :1] for k, v in i.payload.items()})
        for i in ins
    ]
    replies = runtime.run(wrong)
    assert [r.update for r in replies] == [None, None]
    assert all(r.error for r in replies)


def _write_shards(
    exp: Experiment, directory: Path, limit: int | None = None
) -> dict[int, str]:
    """Each client's shard of ``exp`` (its first ``limit`` rows) as a CSV file
    of its own, in shard order."""
    names = exp.corpus.label_names
    files = {}
    directory.mkdir(exist_ok=True)
    for k, rows in enumerate(exp.partition):
        rows = rows[:limit]
        path = directory / f"client{k}.csv"
        with path.open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["text", "label"])
            for i in rows:
                writer.writerow(
                    [exp.corpus.train.texts[i], names[exp.corpus.train.labels[i]]]
                )
        files[k] = str(path)
    return files


def test_nodes_with_data_files_of_their_own(
    tiny_experiment: Experiment, tmp_path: Path
) -> None:
    """Data holders training on their own files (``fedpeft node --data``): the
    server learns n_k from the nodes. Files holding exactly the partition's
    shards give exactly the partitioned run; the nodes' n_k weight the
    clients, not the server's partition."""
    exp = _experiment(tiny_experiment, tmp_path, "strategy.name=dynamic")
    files = _write_shards(exp, tmp_path)
    embedded = FederatedRun(exp).run()

    nodes = [
        NodeWorker(exp.config, k, build=lambda _: exp, data=files[k])
        for k in range(len(exp.clients))
    ]
    assert [n.num_examples for n in nodes] == [len(c.train) for c in exp.clients]
    runtime = RemoteRuntime(LocalTransport(nodes))
    sizes = runtime.connect(config_digest(exp.config), [None] * len(exp.clients))
    assert sizes == [len(c.train) for c in exp.clients]
    run = FederatedRun(exp, runtime=lambda _: runtime, client_sizes=sizes)
    assert _max_diff(run.run().params, embedded.params) == 0.0

    # a holder with less data than the server's own shard for it: its n_k counts
    few = _write_shards(exp, tmp_path / "few", limit=5)
    small = NodeWorker(exp.config, 0, build=lambda _: exp, data=few[0])
    runtime = RemoteRuntime(LocalTransport([small, *nodes[1:]]))
    sizes = runtime.connect(config_digest(exp.config), [None] * len(exp.clients))
    f = exp.config.partition.val_fraction  # the holder's validation part
    assert sizes[0] == small.num_examples == 5 - max(1, round(f * 5))


def test_node_data_errors_name_the_problem(
    tiny_experiment: Experiment, tmp_path: Path
) -> None:
    exp = _experiment(tiny_experiment, tmp_path)
    bad = tmp_path / "bad.csv"
    bad.write_text("text,label\nsome news,not-a-topic\n")
    with pytest.raises(ValueError, match=r"not-a-topic.*run's labels are"):
        NodeWorker(exp.config, 0, build=lambda _: exp, data=str(bad))
    with pytest.raises(ValueError, match=r"\.csv or \.jsonl"):
        NodeWorker(exp.config, 0, build=lambda _: exp, data=str(tmp_path / "x.txt"))
    # a holder of unknown n_k that is not up: the run cannot weight it
    files = _write_shards(exp, tmp_path)
    nodes = [
        NodeWorker(exp.config, k, build=lambda _: exp, data=files[k]) for k in (0, 1)
    ]
    runtime = RemoteRuntime(LocalTransport(nodes))
    with pytest.raises(
        FederationError, match=r"clients \[2, 3\] hold data of their own"
    ):
        runtime.connect(config_digest(exp.config), [None] * len(exp.clients))


BLACKBOX = [*TINY_BLACKBOX, "federation.rounds=1"]


@pytest.mark.parametrize(
    "extra",
    [
        ["peft.server_rule=fedbpt"],
        ["peft.server_rule=fedbpt", "peft.head=fixed"],
        # zero heads: the probe warm start's secure sum rounds differently in
        # and out of process (1e-7), and the clients' L-BFGS head refit on a
        # few separable examples, never converged, amplifies that to 0.2
        [
            "peft.server_rule=mean",
            "privacy.secagg=true",
            "privacy.secagg_clip_range=8",
            "peft.head_init=zeros",
        ],
    ],
)
def test_black_box_clients_run_behind_messages_as_in_process(
    tiny_experiment: Experiment, tmp_path: object, extra: list[str]
) -> None:
    """z is another payload: FedBPT's rule and the (secure) mean give the
    embedded engine's result with the clients behind a transport."""
    exp = _experiment(tiny_experiment, tmp_path, *BLACKBOX, *extra)
    embedded = FederatedRun(exp).run()
    remote, _ = _remote(exp)
    result = remote.run()
    tolerance = 1e-4 if "privacy.secagg=true" in extra else 0.0
    assert _max_diff(result.params, embedded.params) <= tolerance
    assert np.abs(result.params["z"]).max() > 0  # the search moved z
    sigmas = [r["search_sigma"] for r in result.history[1:]]
    assert sigmas == [r["search_sigma"] for r in embedded.history[1:]]


def test_fedbpt_rule_refuses_secure_aggregation(
    tiny_experiment: Experiment, tmp_path: object
) -> None:
    from fedpeft.config import ConfigError

    exp = _experiment(tiny_experiment, tmp_path, *BLACKBOX, "privacy.secagg=true")
    with pytest.raises(ConfigError, match="server_rule = 'mean'"):
        FederatedRun(exp)
