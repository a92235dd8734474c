"""Poisoning clients: ordinary client algorithms that train honestly and then
send something else (or train on poisoned labels).

A fixed, seeded set of clients attacks (:func:`choose_attackers`); in every
fit round (>= 1) that selects one, :class:`AttackClient` replaces its honest
update ΔP:

* ``sign-flip``: −s·ΔP (s = ``attack.scale``);
* ``scale``: s·ΔP (a boosted update, as in model replacement);
* ``noise``: a Gaussian vector of norm ≈ s·‖ΔP‖ (each coordinate
  N(0, (s‖ΔP‖)²/d)), from the client's seeded stream;
* ``label-flip``: the client trains on labels C − 1 − y (data poisoning, set
  up by :func:`poisoned_shard`); its update is sent as computed;
* ``alie``: "A Little Is Enough" (Baruch et al. 2019): the round's attackers
  collude; each sends μ − z·σ, the coordinate-wise mean and standard deviation
  of the colluders' honest updates, with z Baruch's z_max =
  Φ⁻¹((n − s)/n), s = ⌊n/2 + 1⌋ − m for n clients in the round, m of them
  attackers (or ``attack.alie_z``). The colluders are the attackers trained
  together in one batched call (:meth:`AttackClient.fit_many`).

``attack.claim_examples`` makes attackers also report that many examples.
The round-0 warm start is answered honestly, except by label-flip attackers:
their poisoned data also feeds their probe head or class statistics.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Any

import numpy as np

from fedpeft.aggregation import flatten, global_norm, unflatten
from fedpeft.client.algorithm import WrappedClient
from fedpeft.config_threats import AttackSection
from fedpeft.messages import Instruction
from fedpeft.models.tokenized import TokenizedDataset
from fedpeft.seeding import stream
from fedpeft.types import ClientUpdate, Params

logger = logging.getLogger(__name__)


def choose_attackers(num_clients: int, fraction: float, seed: int) -> frozenset[int]:
    """round(fraction · N) client ids (at least one when ``fraction > 0``),
    drawn by the run seed's ``attackers`` stream."""
    if fraction <= 0:
        return frozenset()
    count = min(max(1, round(fraction * num_clients)), num_clients)
    order = stream(seed, "attackers").permutation(num_clients)
    return frozenset(int(k) for k in order[:count])


def flipped_labels(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """y → C − 1 − y (binary: the other class)."""
    return (num_classes - 1 - np.asarray(labels)).astype(np.int64)


@dataclass(frozen=True)
class PoisonedShard:
    """A client's train/validation data with its training labels flipped."""

    train: TokenizedDataset
    val: TokenizedDataset


def poisoned_shard(shard: Any, num_classes: int) -> PoisonedShard:
    """``shard`` with its training labels flipped (validation kept: the client
    reports honest-looking metrics)."""
    train = shard.train
    return PoisonedShard(
        dataclasses.replace(train, labels=flipped_labels(train.labels, num_classes)),
        shard.val,
    )


def alie_z(clients: int, attackers: int) -> float:
    """Baruch et al.'s z_max for n clients of which m attack: the largest z
    for which enough honest values lie farther from the mean than μ − zσ."""
    needed = math.floor(clients / 2 + 1) - attackers
    quantile = (clients - needed) / clients
    quantile = min(max(quantile, 1e-6), 1 - 1e-6)
    return max(NormalDist().inv_cdf(quantile), 0.0)


def alie_update(honest: Sequence[Params], z: float) -> Params:
    """μ − z·σ per coordinate over the colluders' honest updates (σ with
    ddof = 1; zero for a single colluder, which then sends its mean)."""
    rows = np.stack([flatten(d) for d in honest])
    std = rows.std(axis=0, ddof=1) if len(rows) > 1 else np.zeros(rows.shape[1])
    return unflatten(rows.mean(axis=0) - z * std, honest[0])


def gaussian_update(delta: Params, scale: float, rng: np.random.Generator) -> Params:
    """A Gaussian vector shaped like ``delta`` with expected norm ≈ s·‖Δ‖."""
    flat = flatten(delta)
    std = scale * global_norm(delta) / math.sqrt(max(flat.size, 1))
    return unflatten(rng.normal(0.0, std, flat.size), delta)


@dataclass
class AttackClient(WrappedClient):
    """The inner client algorithm, with :attr:`attackers` poisoning their fits.

    Attributes:
        inner: The honest client algorithm.
        attackers: Ids of the attacking clients.
        options: The ``[attack]`` section.
        seed: Run seed (the noise attack's stream).
    """

    attackers: frozenset[int]
    options: AttackSection
    seed: int
    _warned: bool = field(default=False, repr=False)

    def fit(self, ins: Instruction) -> ClientUpdate:
        update = self.inner.fit(ins)
        if self._attacks(ins) and self.options.kind == "alie" and not self._warned:
            logger.warning(
                "round %d: an ALIE attacker trained alone (the batched path "
                "failed) and has no colluders: it sends its honest update",
                ins.round,
            )
            self._warned = True
        return self._poison([ins], [update])[0]

    def fit_many(self, instructions: Sequence[Instruction]) -> list[ClientUpdate]:
        return self._poison(instructions, self.inner.fit_many(instructions))

    # ------------------------------------------------------------------
    def _attacks(self, ins: Instruction) -> bool:
        return ins.client_id in self.attackers and ins.round >= 1

    def _poison(
        self, instructions: Sequence[Instruction], updates: Sequence[ClientUpdate]
    ) -> list[ClientUpdate]:
        """The replies the group sends: honest ones as they are, the
        attackers' replaced."""
        o = self.options
        bad = [i for i, ins in enumerate(instructions) if self._attacks(ins)]
        if not bad:
            return list(updates)
        out = list(updates)
        forged: Params = {}
        if o.kind == "alie":
            z = o.alie_z if o.alie_z is not None else alie_z(len(updates), len(bad))
            forged = alie_update([updates[i].delta for i in bad], z)
        for i in bad:
            u, ins = updates[i], instructions[i]
            if o.kind == "sign-flip":
                delta = {
                    k: (-o.scale * v).astype(np.float32) for k, v in u.delta.items()
                }
            elif o.kind == "scale":
                delta = {
                    k: (o.scale * v).astype(np.float32) for k, v in u.delta.items()
                }
            elif o.kind == "noise":
                rng = stream(self.seed, "attack", ins.round, ins.client_id)
                delta = gaussian_update(u.delta, o.scale, rng)
            elif o.kind == "alie":
                delta = {k: v.copy() for k, v in forged.items()}
            else:  # label-flip: poisoned in training; none: honest
                delta = u.delta
            claimed = o.claim_examples
            out[i] = dataclasses.replace(
                u,
                delta=delta,
                num_examples=u.num_examples if claimed is None else claimed,
            )
        return out
