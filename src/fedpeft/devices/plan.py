"""Device plans: draw each client's device profile and allocate it the LoRA size
it can afford (or exclude it), as the ``[devices]`` config asks."""

from __future__ import annotations

from dataclasses import dataclass

from fedpeft.config import parse_lora_size
from fedpeft.devices.allocation import (
    Allocation,
    CostFn,
    allocate,
    analytic_cost_fn,
    excluded_by_fixed,
)
from fedpeft.devices.cost import AdapterOption, BackboneDims, round_time
from fedpeft.devices.menus import lora_option
from fedpeft.devices.profiles import DeviceProfile, draw_profiles
from fedpeft.experiment import Experiment
from fedpeft.server.mixed_lora import LoraSize


@dataclass(frozen=True)
class DevicePlan:
    """Who trains which LoRA size, and what the device model predicts.

    Attributes:
        menu: The LoRA sizes on offer, smallest first.
        sizes: Per client its size, or ``None`` when excluded.
        allocation: The policy's decision with predicted memory, time, bytes.
        excluded_by_fixed: Clients the largest size, given to everyone, would
            exclude.
    """

    menu: tuple[LoraSize, ...]
    sizes: tuple[LoraSize | None, ...]
    allocation: Allocation
    excluded_by_fixed: int
    profiles: tuple[DeviceProfile, ...]
    options: tuple[AdapterOption, ...]
    cost_fn: CostFn

    def predicted_seconds(self, client: int) -> dict[str, float]:
        """Predicted round time of every menu size on ``client``'s device."""
        return {
            size.label: round_time(self.cost_fn(client, option), self.profiles[client])
            for size, option in zip(self.menu, self.options, strict=True)
        }


def plan_devices(experiment: Experiment) -> DevicePlan:
    """Draw the device profiles and allocate LoRA sizes (``[devices]`` config).

    The analytic cost model (:mod:`fedpeft.devices.cost`) predicts each client's
    memory, FLOPs and bytes for each menu size from the backbone's dimensions,
    the client's number of examples and the local-training settings.
    """
    cfg = experiment.config
    d = cfg.devices
    if d.profiles is None:
        raise ValueError("devices.profiles is not set; there is nothing to allocate")
    menu = tuple(LoraSize(*parse_lora_size(entry)) for entry in d.menu)
    backbone = experiment.backbone
    dims = BackboneDims.from_hf_config(backbone.model.config, backbone.num_parameters)
    head = (backbone.hidden_size + 1) * experiment.num_classes
    options = [
        lora_option(dims, s.rank, layers=s.layers, head_params=head) for s in menu
    ]
    profiles = draw_profiles(d.profiles, cfg.federation.num_clients, seed=cfg.seed)
    cost_fn = analytic_cost_fn(
        dims,
        batch_size=cfg.client.batch_size,
        seq_len=cfg.model.max_length,
        num_examples=[len(c.train) for c in experiment.clients],
        epochs=max(cfg.client.local_epochs, 1),
    )
    allocation = allocate(
        d.policy,
        profiles,
        options,
        cost_fn,
        deadline_s=d.deadline_s,
        fixed_index=d.fixed_index,
    )
    sizes = tuple(
        menu[c.menu_index] if c.menu_index is not None else None
        for c in allocation.clients
    )
    fixed = excluded_by_fixed(profiles, options, cost_fn, deadline_s=d.deadline_s)
    return DevicePlan(
        menu, sizes, allocation, fixed, tuple(profiles), tuple(options), cost_fn
    )
