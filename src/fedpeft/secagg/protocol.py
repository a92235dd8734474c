"""The SecAgg / SecAgg+ protocol as frozen states plus stage functions.

Bonawitz et al. 2017, "Practical Secure Aggregation for Privacy-Preserving
Machine Learning" (Figure 4, honest-but-curious), with the sparse neighbour
graph of Bell et al. 2020, "Secure Single-Server Aggregation with
(Poly)Logarithmic Overhead" (SecAgg+). Like Flower's ``SecAggPlusWorkflow`` but
as pure functions a runtime drives; the runtime carries the messages (each has
``encode``/``decode``) and decides who dropped by who answered.

    states, server = setup(config, N, D, os.urandom)
    # stage 0: advertise keys
    c_u, adv_u        = client_advertise_keys(c_u, random_bytes_u)       (each u)
    server, bcast     = server_collect_keys(server, [adv_u ...])
    # stage 1: share keys
    c_u, pkg_u        = client_share_keys(c_u, bcast[u], random_bytes_u)
    server, routed    = server_route_shares(server, [pkg_u ...])
    # stage 2: masked input
    c_u, y_u          = client_mask_input(c_u, routed[u], x_u, rng_u)
    server, requests  = server_collect_masked(server, [y_u ...])
    # stage 3: unmask
    c_u, resp_u       = client_unmask(c_u, requests[u])
    server, result    = server_unmask(server, [resp_u ...])

Any stage may see fewer clients than the one before (dropouts); the server
functions raise :class:`InsufficientSurvivorsError` rather than release a
partial result.
"""

from __future__ import annotations

from fedpeft.secagg.client import ClientState
from fedpeft.secagg.client import advertise_keys as client_advertise_keys
from fedpeft.secagg.client import mask_input as client_mask_input
from fedpeft.secagg.client import share_keys as client_share_keys
from fedpeft.secagg.client import unmask as client_unmask
from fedpeft.secagg.config import SecAggConfig
from fedpeft.secagg.errors import (
    InsufficientSurvivorsError,
    ProtocolError,
    SecAggError,
)
from fedpeft.secagg.params import RoundParams, make_round_params
from fedpeft.secagg.server import SecAggResult, ServerState
from fedpeft.secagg.server import collect_keys as server_collect_keys
from fedpeft.secagg.server import collect_masked as server_collect_masked
from fedpeft.secagg.server import route_shares as server_route_shares
from fedpeft.secagg.server import unmask as server_unmask
from fedpeft.secagg.shamir import RandomBytes

__all__ = [
    "ClientState",
    "InsufficientSurvivorsError",
    "ProtocolError",
    "RoundParams",
    "SecAggConfig",
    "SecAggError",
    "SecAggResult",
    "ServerState",
    "client_advertise_keys",
    "client_mask_input",
    "client_share_keys",
    "client_unmask",
    "server_collect_keys",
    "server_collect_masked",
    "server_route_shares",
    "server_unmask",
    "setup",
]


def setup(
    config: SecAggConfig, num_clients: int, length: int, random_bytes: RandomBytes
) -> tuple[list[ClientState], ServerState]:
    """Fix the round's public parameters and the parties' initial states.

    Args:
        config: The validated configuration.
        num_clients: N; clients get ids 0 .. N − 1.
        length: D, values per input vector.
        random_bytes: Source of the public session id and graph seed
            (``os.urandom`` in secure mode).

    Raises:
        ValueError: see :func:`fedpeft.secagg.params.make_round_params`.
    """
    params = make_round_params(config, num_clients, length, random_bytes)
    clients = [ClientState(params, u) for u in range(num_clients)]
    return clients, ServerState(params)
