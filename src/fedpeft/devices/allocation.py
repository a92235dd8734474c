"""Choose each client's adapter size so it fits the device and the round deadline.

An allocation policy from :data:`ALLOCATION_POLICIES` sees, for every client,
the predicted cost of every option of an ordered menu (smallest first) and
picks one option or excludes the client. An option *fits* a client when its
predicted memory is at most the device's memory budget and, when a deadline is
set, its predicted round time (:func:`~fedpeft.devices.cost.round_time`) is at
most the deadline. Policies:

* ``fixed``: everyone gets ``menu[fixed_index]``; clients it does not fit are
  excluded (the usual one-size-fits-all federated setup).
* ``largest-fit``: each client gets the last (largest) menu option that fits;
  excluded only when no option fits.
* ``budget-proportional``: in the spirit of HetLoRA (Cho et al. 2024,
  arXiv:2401.06432), which sizes LoRA ranks by device capability: a client
  whose share of the strongest client's resources is
  ``b = min(memory / max memory, speed / max speed)`` may use the first
  ``ceil(b * len(menu))`` options and gets the largest of those that fits.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from fedpeft.devices.cost import (
    AdapterOption,
    BackboneDims,
    ClientCost,
    estimate_cost,
    round_time,
)
from fedpeft.devices.profiles import GIB, MB, DeviceProfile
from fedpeft.registry import Registry

CostFn = Callable[[int, AdapterOption], ClientCost]
"""``(client_index, option) -> predicted cost`` of that client's local round."""


@dataclass(frozen=True)
class Candidate:
    """One menu option evaluated for one client.

    Attributes:
        index: Position in the menu.
        cost: Predicted cost.
        time_s: Predicted round time in seconds.
        fits_memory: ``cost.memory_bytes <= profile.memory_bytes``.
        fits_deadline: Round time within the deadline (``True`` when none).
    """

    index: int
    cost: ClientCost
    time_s: float
    fits_memory: bool
    fits_deadline: bool

    @property
    def fits(self) -> bool:
        """Whether the option fits both memory and deadline."""
        return self.fits_memory and self.fits_deadline


@dataclass(frozen=True)
class Choice:
    """A policy's decision for one client: a menu index, or an exclusion reason."""

    index: int | None
    reason: str = ""


def choose_largest(candidates: Sequence[Candidate]) -> Choice:
    """The last fitting candidate, else an exclusion saying what did not fit.

    The reason is ``"memory"`` when no candidate fits memory, else ``"deadline"``.
    """
    fitting = [c for c in candidates if c.fits]
    if fitting:
        return Choice(fitting[-1].index)
    return Choice(
        None, "deadline" if any(c.fits_memory for c in candidates) else "memory"
    )


PolicyFn = Callable[
    [Sequence[DeviceProfile], Sequence[Sequence[Candidate]], int], list[Choice]
]
"""``(profiles, candidates per client, fixed_index) -> one choice per client``."""

ALLOCATION_POLICIES: Registry[PolicyFn] = Registry("allocation policy")


@ALLOCATION_POLICIES.register("fixed")
def _fixed(
    profiles: Sequence[DeviceProfile],
    candidates: Sequence[Sequence[Candidate]],
    fixed_index: int,
) -> list[Choice]:
    """Everyone gets menu[fixed_index]; clients it does not fit are excluded."""
    return [choose_largest([c[fixed_index]]) for c in candidates]


@ALLOCATION_POLICIES.register("largest-fit")
def _largest_fit(
    profiles: Sequence[DeviceProfile],
    candidates: Sequence[Sequence[Candidate]],
    fixed_index: int,
) -> list[Choice]:
    """Each client gets the largest menu option that fits it."""
    return [choose_largest(c) for c in candidates]


@ALLOCATION_POLICIES.register("budget-proportional")
def _budget_proportional(
    profiles: Sequence[DeviceProfile],
    candidates: Sequence[Sequence[Candidate]],
    fixed_index: int,
) -> list[Choice]:
    """Menu prefix proportional to the client's share of the strongest device."""
    top_memory = max(p.memory_bytes for p in profiles)
    top_speed = max(p.speed for p in profiles)
    choices = []
    for profile, cands in zip(profiles, candidates, strict=True):
        share = min(profile.memory_bytes / top_memory, profile.speed / top_speed)
        allowed = max(1, math.ceil(share * len(cands)))
        choices.append(choose_largest(cands[:allowed]))
    return choices


@dataclass(frozen=True)
class ClientAllocation:
    """One client's outcome.

    Attributes:
        profile: The client's device.
        option: The chosen option; ``None`` when excluded.
        menu_index: The option's menu position; ``None`` when excluded.
        cost: Predicted cost of the chosen option; ``None`` when excluded.
        time_s: Predicted round time of the chosen option; ``None`` when excluded.
        reason: Why the client was excluded (``"memory"``/``"deadline"``), or ``""``.
    """

    profile: DeviceProfile
    option: AdapterOption | None
    menu_index: int | None
    cost: ClientCost | None
    time_s: float | None
    reason: str

    @property
    def participates(self) -> bool:
        """Whether the client was given an option."""
        return self.option is not None


@dataclass(frozen=True)
class AllocationSummary:
    """Totals over the clients of an :class:`Allocation`.

    Attributes:
        num_clients: Clients considered.
        participating: Clients given an option.
        excluded: Clients left out.
        excluded_memory: Left out because nothing allowed fits memory.
        excluded_deadline: Left out because nothing allowed meets the deadline.
        upload_bytes: Total predicted client-to-server bytes per round.
        download_bytes: Total predicted server-to-client bytes per round.
        max_time_s: Slowest participant's predicted round time (0 when none).
    """

    num_clients: int
    participating: int
    excluded: int
    excluded_memory: int
    excluded_deadline: int
    upload_bytes: int
    download_bytes: int
    max_time_s: float


@dataclass(frozen=True)
class Allocation:
    """Per-client options chosen by a policy, with predicted costs.

    Attributes:
        policy: The policy's name.
        deadline_s: The round deadline, or ``None``.
        clients: One entry per client, in profile order.
    """

    policy: str
    deadline_s: float | None
    clients: tuple[ClientAllocation, ...]

    @property
    def options(self) -> tuple[AdapterOption | None, ...]:
        """Each client's option, ``None`` for the excluded."""
        return tuple(c.option for c in self.clients)

    def summary(self) -> AllocationSummary:
        """Participation, exclusions and bytes totals."""
        taking = [c for c in self.clients if c.cost is not None]
        return AllocationSummary(
            num_clients=len(self.clients),
            participating=len(taking),
            excluded=len(self.clients) - len(taking),
            excluded_memory=sum(c.reason == "memory" for c in self.clients),
            excluded_deadline=sum(c.reason == "deadline" for c in self.clients),
            upload_bytes=sum(c.cost.upload_bytes for c in taking if c.cost),
            download_bytes=sum(c.cost.download_bytes for c in taking if c.cost),
            max_time_s=max((c.time_s or 0.0 for c in taking), default=0.0),
        )

    def to_rows(self) -> list[dict[str, object]]:
        """One plain dict per client for tables and CSV (GiB, MB, seconds)."""
        return [_row(i, c) for i, c in enumerate(self.clients)]


def _row(index: int, c: ClientAllocation) -> dict[str, object]:
    cost = c.cost
    return {
        "client": index,
        "device": c.profile.name,
        "tier": c.profile.tier,
        "memory_budget_gib": c.profile.memory_bytes / GIB,
        "option": c.option.label if c.option else None,
        "trainable_params": c.option.trainable_params if c.option else None,
        "memory_gib": cost.memory_bytes / GIB if cost else None,
        "time_s": c.time_s,
        "upload_mb": cost.upload_bytes / MB if cost else None,
        "download_mb": cost.download_bytes / MB if cost else None,
        "excluded": c.reason,
    }


def allocate(
    policy: str,
    profiles: Sequence[DeviceProfile],
    menu: Sequence[AdapterOption],
    cost_fn: CostFn,
    *,
    deadline_s: float | None = None,
    fixed_index: int = -1,
) -> Allocation:
    """Choose each client's adapter option with the named policy.

    Args:
        policy: A name in :data:`ALLOCATION_POLICIES`.
        profiles: One device per client.
        menu: Options ordered smallest first (non-empty).
        cost_fn: ``(client_index, option) -> ClientCost``, e.g. from
            :func:`analytic_cost_fn`.
        deadline_s: Round deadline in seconds (> 0), or ``None`` for none.
        fixed_index: Menu position for ``fixed`` (negative counts from the end;
            the default ``-1`` is the largest option).

    Returns:
        The :class:`Allocation`, clients in profile order.

    Raises:
        KeyError: Unknown ``policy`` (the message lists the choices).
        ValueError: Empty ``profiles`` or ``menu``, ``deadline_s <= 0``, or
            ``fixed_index`` outside the menu.
    """
    choose = ALLOCATION_POLICIES.get(policy)
    index = _check_allocate_args(profiles, menu, deadline_s, fixed_index)
    candidates = [
        [_evaluate(k, p, j, o, cost_fn, deadline_s) for j, o in enumerate(menu)]
        for k, p in enumerate(profiles)
    ]
    choices = choose(profiles, candidates, index)
    clients = tuple(
        _outcome(p, menu, cands, choice)
        for p, cands, choice in zip(profiles, candidates, choices, strict=True)
    )
    return Allocation(policy, deadline_s, clients)


def _evaluate(
    client: int,
    profile: DeviceProfile,
    index: int,
    option: AdapterOption,
    cost_fn: CostFn,
    deadline_s: float | None,
) -> Candidate:
    cost = cost_fn(client, option)
    time_s = round_time(cost, profile)
    on_time = deadline_s is None or time_s <= deadline_s
    return Candidate(
        index, cost, time_s, cost.memory_bytes <= profile.memory_bytes, on_time
    )


def _outcome(
    profile: DeviceProfile,
    menu: Sequence[AdapterOption],
    candidates: Sequence[Candidate],
    choice: Choice,
) -> ClientAllocation:
    if choice.index is None:
        return ClientAllocation(profile, None, None, None, None, choice.reason)
    chosen = candidates[choice.index]
    return ClientAllocation(
        profile, menu[choice.index], choice.index, chosen.cost, chosen.time_s, ""
    )


def _check_allocate_args(
    profiles: Sequence[DeviceProfile],
    menu: Sequence[AdapterOption],
    deadline_s: float | None,
    fixed_index: int,
) -> int:
    if not profiles:
        raise ValueError("profiles is empty; give one DeviceProfile per client")
    if not menu:
        raise ValueError("menu is empty; give at least one AdapterOption")
    if deadline_s is not None and not (math.isfinite(deadline_s) and deadline_s > 0):
        raise ValueError(
            f"deadline_s must be a finite number > 0 or None, got {deadline_s}"
        )
    if not -len(menu) <= fixed_index < len(menu):
        raise ValueError(
            f"fixed_index={fixed_index} is outside a menu of {len(menu)} options; "
            f"use {-len(menu)}..{len(menu) - 1}"
        )
    return fixed_index % len(menu)


def excluded_by_fixed(
    profiles: Sequence[DeviceProfile],
    menu: Sequence[AdapterOption],
    cost_fn: CostFn,
    *,
    deadline_s: float | None = None,
    fixed_index: int = -1,
) -> int:
    """How many clients the ``fixed`` policy at ``menu[fixed_index]`` would exclude."""
    fixed = allocate(
        "fixed", profiles, menu, cost_fn, deadline_s=deadline_s, fixed_index=fixed_index
    )
    return fixed.summary().excluded


def analytic_cost_fn(
    dims: BackboneDims,
    *,
    batch_size: int,
    seq_len: int,
    num_examples: int | Sequence[int],
    epochs: int = 1,
    bytes_per_param_backbone: float = 4,
) -> CostFn:
    """A :data:`CostFn` from :func:`~fedpeft.devices.cost.estimate_cost`.

    Args:
        dims: Backbone sizes.
        batch_size: Examples per step.
        seq_len: Tokens per example before any prompt.
        num_examples: One count for every client, or one per client index.
        epochs: Local epochs.
        bytes_per_param_backbone: Storage of each frozen weight.
    """

    def cost(client: int, option: AdapterOption) -> ClientCost:
        n = num_examples if isinstance(num_examples, int) else num_examples[client]
        return estimate_cost(
            dims,
            option,
            batch_size=batch_size,
            seq_len=seq_len,
            num_examples=n,
            epochs=epochs,
            bytes_per_param_backbone=bytes_per_param_backbone,
        )

    return cost
