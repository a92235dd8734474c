"""Aggregation math: pure numpy functions over :data:`fedpeft.types.Params`.

No torch, no I/O, no transport types. Strategies (:mod:`fedpeft.strategies`) are
thin stateful wrappers around these functions.
"""

from fedpeft.aggregation.dynamic import (
    DISTANCE_SCALES,
    DistanceScale,
    DynamicWeights,
    client_distances,
    dynamic_aggregate,
    dynamic_weights,
    scale_distances,
)
from fedpeft.aggregation.mean import (
    ParamsLike,
    add_params,
    check_updates,
    check_weights,
    example_weights,
    flatten,
    global_norm,
    unflatten,
    uniform_weights,
    weighted_mean,
)
from fedpeft.aggregation.server_opt import (
    ServerOptConfig,
    ServerOptState,
    adam_second_moment,
    adaptive_step,
    fedadam_step,
    fedyogi_step,
    init_state,
    yogi_second_moment,
)

__all__ = [
    "DISTANCE_SCALES",
    "DistanceScale",
    "DynamicWeights",
    "ParamsLike",
    "ServerOptConfig",
    "ServerOptState",
    "adam_second_moment",
    "adaptive_step",
    "add_params",
    "check_updates",
    "check_weights",
    "client_distances",
    "dynamic_aggregate",
    "dynamic_weights",
    "example_weights",
    "fedadam_step",
    "fedyogi_step",
    "flatten",
    "global_norm",
    "init_state",
    "scale_distances",
    "unflatten",
    "uniform_weights",
    "weighted_mean",
    "yogi_second_moment",
]
