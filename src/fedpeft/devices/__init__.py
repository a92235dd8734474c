"""Heterogeneous client devices and the adapter size each one can afford.

Federated clients run on devices from phones to servers. This package gives
each client a :class:`DeviceProfile` (memory, FLOP/s, link bandwidths), predicts
the cost of a local round with a given :class:`AdapterOption` on a transformer
backbone (:func:`estimate_cost`, an analytic model with named constants in
:mod:`.cost`), and lets an allocation policy choose each client's adapter size
so it fits the device's memory and the round deadline (:func:`allocate`).

Layout: :mod:`.profiles` (profiles, :data:`DEVICE_DISTRIBUTIONS`, file loading),
:mod:`.cost` (backbone sizes and the cost model), :mod:`.menus` (options of
common PEFT methods), :mod:`.allocation` (:data:`ALLOCATION_POLICIES`).
"""

from fedpeft.devices.allocation import (
    ALLOCATION_POLICIES,
    Allocation,
    AllocationSummary,
    Candidate,
    Choice,
    ClientAllocation,
    CostFn,
    PolicyFn,
    allocate,
    analytic_cost_fn,
    choose_largest,
    excluded_by_fixed,
)
from fedpeft.devices.cost import (
    AdapterOption,
    BackboneDims,
    ClientCost,
    estimate_cost,
    layer_activation_values,
    round_time,
)
from fedpeft.devices.menus import (
    BUILDERS,
    build_menu,
    lora_option,
    prefix_option,
    prompt_option,
    top_layers_option,
)
from fedpeft.devices.profiles import (
    DEVICE_DISTRIBUTIONS,
    GIB,
    MB,
    TIERS,
    DeviceProfile,
    DistributionFn,
    Tier,
    draw_profiles,
    load_profiles,
)

__all__ = [
    "ALLOCATION_POLICIES",
    "BUILDERS",
    "DEVICE_DISTRIBUTIONS",
    "GIB",
    "MB",
    "TIERS",
    "AdapterOption",
    "Allocation",
    "AllocationSummary",
    "BackboneDims",
    "Candidate",
    "Choice",
    "ClientAllocation",
    "ClientCost",
    "CostFn",
    "DeviceProfile",
    "DistributionFn",
    "PolicyFn",
    "Tier",
    "allocate",
    "analytic_cost_fn",
    "build_menu",
    "choose_largest",
    "draw_profiles",
    "estimate_cost",
    "excluded_by_fixed",
    "layer_activation_values",
    "load_profiles",
    "lora_option",
    "prefix_option",
    "prompt_option",
    "round_time",
    "top_layers_option",
]
