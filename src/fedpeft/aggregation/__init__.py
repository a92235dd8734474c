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
from fedpeft.aggregation.ffa_lora import ffa_lora_aggregate
from fedpeft.aggregation.flexlora import flexlora_aggregate, flexlora_distribute
from fedpeft.aggregation.hetlora import (
    hetlora_aggregate,
    hetlora_truncate,
    hetlora_weights,
)
from fedpeft.aggregation.lora import (
    RANK_SCALINGS,
    RankScaling,
    fedavg_lora,
    lora_pairs,
    lora_products,
    lora_rank,
    lora_scaling,
)
from fedpeft.aggregation.mean import (
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
    "RANK_SCALINGS",
    "DistanceScale",
    "DynamicWeights",
    "RankScaling",
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
    "fedavg_lora",
    "fedyogi_step",
    "ffa_lora_aggregate",
    "flatten",
    "flexlora_aggregate",
    "flexlora_distribute",
    "global_norm",
    "hetlora_aggregate",
    "hetlora_truncate",
    "hetlora_weights",
    "init_state",
    "lora_pairs",
    "lora_products",
    "lora_rank",
    "lora_scaling",
    "scale_distances",
    "unflatten",
    "uniform_weights",
    "weighted_mean",
    "yogi_second_moment",
]
