"""Public parameters of one secure-aggregation round, shared by all parties."""

from __future__ import annotations

from dataclasses import dataclass, replace

from fedpeft.secagg.config import SecAggConfig
from fedpeft.secagg.graph import Neighbourhoods, build_graph, threshold_for
from fedpeft.secagg.quantize import check_overflow, safe_value_bits
from fedpeft.secagg.shamir import RandomBytes

SESSION_BYTES = 16


@dataclass(frozen=True)
class RoundParams:
    """Everything about a round that every client and the server may know.

    Attributes:
        num_clients: N, clients invited to the round (ids 0 .. N − 1).
        length: D, values per input vector.
        bits: b, the modulus is 2^b.
        value_bits: q, bits per quantized value; N · (2^q − 1) < 2^b holds.
        clip_range: r, inputs are clipped to [-r, r].
        session: Public random round id, bound into every key derivation.
        graph: ``graph[u]``, the neighbours u masks with and shares to.
        thresholds: ``thresholds[u]``, the Shamir threshold t_u of u's secrets.
    """

    num_clients: int
    length: int
    bits: int
    value_bits: int
    clip_range: float
    session: bytes
    graph: Neighbourhoods
    thresholds: tuple[int, ...]


def make_round_params(
    config: SecAggConfig, num_clients: int, length: int, random_bytes: RandomBytes
) -> RoundParams:
    """Resolve ``config`` for N clients and D-long vectors.

    The session id and the graph's relabelling seed are drawn from
    ``random_bytes``; both are public.

    Raises:
        ValueError: if N < 2, D < 1, q overflows for N (naming N, b and the
            largest safe N), or the threshold does not fit a neighbourhood.
    """
    if num_clients < 2:
        raise ValueError(
            f"secure aggregation needs at least 2 clients, got {num_clients}"
        )
    session = random_bytes(SESSION_BYTES)
    seed = int.from_bytes(random_bytes(8), "big")
    graph = build_graph(num_clients, config.neighbours, seed)
    thresholds = tuple(threshold_for(len(n), config.threshold) for n in graph)
    setup = RoundParams(
        num_clients=num_clients,
        length=1,
        bits=config.bits,
        value_bits=1,
        clip_range=float(config.clip_range),
        session=session,
        graph=graph,
        thresholds=thresholds,
    )
    return resized(setup, config, length)


def resized(params: RoundParams, config: SecAggConfig, length: int) -> RoundParams:
    """``params`` for D = ``length`` values quantized as ``config`` says.

    The session, graph and thresholds stay: the first two stages (keys and
    shares) depend on nothing else, so a round can run them before its inputs
    exist and fix D, b, q and r here (:mod:`fedpeft.remote.secure_sum`).

    Raises:
        ValueError: D < 1, or q overflows for N (naming N, b and the largest
            safe N).
    """
    if length < 1:
        raise ValueError(f"input length must be >= 1, got {length}")
    q = config.value_bits
    if q is None:
        q = safe_value_bits(params.num_clients, config.bits)
    check_overflow(params.num_clients, q, config.bits)
    return replace(
        params,
        length=length,
        bits=config.bits,
        value_bits=q,
        clip_range=float(config.clip_range),
    )
