"""Device profiles of federated clients and seeded distributions over them.

A :class:`DeviceProfile` holds what one client's device can spend on a local
round: a memory budget, a compute speed and link bandwidths. Populations come
from a named distribution in :data:`DEVICE_DISTRIBUTIONS` or from a file
(:func:`load_profiles`); :func:`draw_profiles` chooses between them from one
spec string. Every draw comes from a ``numpy.random.Generator`` seeded by the
caller, so the same spec, size and seed give the same profiles.

Distributions (numbers chosen from public spec sheets; adjust by registering
a new one rather than editing these):

* ``uniform``: every client is the same mid-range laptop: 8 GiB, 1e11 FLOP/s,
  10 MB/s up, 50 MB/s down.
* ``tiers``: exact shares (largest remainder, then shuffled) of three tiers,
  each value drawn uniformly (memory) or log-uniformly (speed, links) in the
  tier's range, see :data:`TIERS`: 30% ``phone`` (1-4 GiB, 5e9-5e10 FLOP/s,
  1-10 MB/s up, 5-50 MB/s down), 50% ``laptop`` (8-16 GiB, 5e10-5e11 FLOP/s,
  5-30 MB/s up, 20-100 MB/s down), 20% ``server`` (32-80 GiB, 5e11-5e12 FLOP/s,
  30-100 MB/s up, 50-125 MB/s down).
* ``phones-and-servers``: heavy-tailed; log-normal memory (median 4 GiB,
  sigma 1.0) and speed (median 5e10 FLOP/s, sigma 1.5, correlation 0.8 with
  memory in log space), log-normal links (median 5 MB/s up, 20 MB/s down,
  sigma 1.0), all clipped to the ranges in :data:`HEAVY_TAIL_CLIPS`. The tier
  label follows memory: < 6 GiB ``phone``, < 24 GiB ``laptop``, else ``server``.
"""

from __future__ import annotations

import csv
import json
import math
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fedpeft.data.partition import allocate_proportional
from fedpeft.registry import Registry

GIB = 1024**3
"""Bytes in one GiB."""
MB = 1_000_000
"""Bytes in one MB (decimal, as link speeds are quoted)."""
MBIT = 125_000
"""Bytes in one megabit."""

_FIELDS = ("memory_bytes", "speed", "uplink_bytes_per_s", "downlink_bytes_per_s")


@dataclass(frozen=True)
class DeviceProfile:
    """What one client's device can spend on a local round.

    Attributes:
        name: Identifier, e.g. ``"client-3"``.
        tier: Device class, e.g. ``"phone"``, ``"laptop"``, ``"server"``.
        memory_bytes: Memory available for training (weights, activations,
            optimizer state), in bytes; > 0.
        speed: Sustained compute speed in absolute FLOP/s (> 0), e.g. about 2e10
            for a 2-core laptop CPU running fp32 PyTorch, 1e14 for a data-centre
            GPU. Round time divides predicted FLOPs by this.
        uplink_bytes_per_s: Client-to-server bandwidth in bytes/s (> 0).
        downlink_bytes_per_s: Server-to-client bandwidth in bytes/s (> 0).
    """

    name: str
    tier: str
    memory_bytes: int
    speed: float
    uplink_bytes_per_s: float
    downlink_bytes_per_s: float

    def __post_init__(self) -> None:
        if isinstance(self.memory_bytes, bool) or not isinstance(
            self.memory_bytes, int
        ):
            raise ValueError(
                f"{self.name}: memory_bytes must be an int, got {self.memory_bytes!r}"
            )
        for field in _FIELDS:
            _check_positive(f"{self.name}: {field}", getattr(self, field))


def _check_positive(what: str, value: float) -> None:
    if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
        raise ValueError(f"{what} must be a finite number > 0, got {value!r}")


DistributionFn = Callable[[int, np.random.Generator], list[DeviceProfile]]
"""``(num_clients, rng) -> one profile per client``."""

DEVICE_DISTRIBUTIONS: Registry[DistributionFn] = Registry("device distribution")


@DEVICE_DISTRIBUTIONS.register("uniform")
def _uniform(num_clients: int, rng: np.random.Generator) -> list[DeviceProfile]:
    """Every client the same mid-range laptop (8 GiB, 1e11 FLOP/s)."""
    del rng  # nothing random
    return [
        DeviceProfile(f"client-{i}", "laptop", 8 * GIB, 1e11, 10 * MB, 50 * MB)
        for i in range(num_clients)
    ]


@dataclass(frozen=True)
class Tier:
    """Ranges of one device tier; each ``(low, high)`` pair is inclusive.

    Attributes:
        name: Tier label.
        share: Fraction of the population in this tier.
        memory_gib: Memory budget range, drawn uniformly.
        speed: FLOP/s range, drawn log-uniformly.
        uplink_mb: Uplink range in MB/s, drawn log-uniformly.
        downlink_mb: Downlink range in MB/s, drawn log-uniformly.
    """

    name: str
    share: float
    memory_gib: tuple[float, float]
    speed: tuple[float, float]
    uplink_mb: tuple[float, float]
    downlink_mb: tuple[float, float]


TIERS = (
    Tier("phone", 0.3, (1.0, 4.0), (5e9, 5e10), (1.0, 10.0), (5.0, 50.0)),
    Tier("laptop", 0.5, (8.0, 16.0), (5e10, 5e11), (5.0, 30.0), (20.0, 100.0)),
    Tier("server", 0.2, (32.0, 80.0), (5e11, 5e12), (30.0, 100.0), (50.0, 125.0)),
)
"""The tiers of the ``tiers`` distribution, weakest first."""


def _log_uniform(rng: np.random.Generator, bounds: tuple[float, float]) -> float:
    return float(np.exp(rng.uniform(np.log(bounds[0]), np.log(bounds[1]))))


def _draw_tier(tier: Tier, name: str, rng: np.random.Generator) -> DeviceProfile:
    return DeviceProfile(
        name=name,
        tier=tier.name,
        memory_bytes=round(rng.uniform(*tier.memory_gib) * GIB),
        speed=_log_uniform(rng, tier.speed),
        uplink_bytes_per_s=_log_uniform(rng, tier.uplink_mb) * MB,
        downlink_bytes_per_s=_log_uniform(rng, tier.downlink_mb) * MB,
    )


@DEVICE_DISTRIBUTIONS.register("tiers")
def _tiers(num_clients: int, rng: np.random.Generator) -> list[DeviceProfile]:
    """30% phones, 50% laptops, 20% servers (exact shares, shuffled)."""
    counts = allocate_proportional(num_clients, [t.share for t in TIERS])
    tier_of = rng.permutation(np.repeat(np.arange(len(TIERS)), counts))
    return [_draw_tier(TIERS[t], f"client-{i}", rng) for i, t in enumerate(tier_of)]


HEAVY_TAIL_CLIPS: Mapping[str, tuple[float, float]] = {
    "memory_gib": (1.0, 80.0),
    "speed": (5e9, 5e12),
    "uplink_mb": (1.0, 100.0),
    "downlink_mb": (2.0, 200.0),
}
"""Plausible ranges the ``phones-and-servers`` draws are clipped to."""


def _tier_by_memory(memory_bytes: int) -> str:
    if memory_bytes < 6 * GIB:
        return "phone"
    return "laptop" if memory_bytes < 24 * GIB else "server"


@DEVICE_DISTRIBUTIONS.register("phones-and-servers")
def _heavy_tailed(num_clients: int, rng: np.random.Generator) -> list[DeviceProfile]:
    """Heavy-tailed: log-normal memory and speed, clipped; mostly phones."""
    z = rng.standard_normal((4, num_clients))
    speed_z = 0.8 * z[0] + math.sqrt(1 - 0.8**2) * z[1]  # correlated with memory
    c = HEAVY_TAIL_CLIPS
    memory = np.clip(4.0 * np.exp(1.0 * z[0]), *c["memory_gib"])
    speed = np.clip(5e10 * np.exp(1.5 * speed_z), *c["speed"])
    up = np.clip(5.0 * np.exp(1.0 * z[2]), *c["uplink_mb"])
    down = np.clip(20.0 * np.exp(1.0 * z[3]), *c["downlink_mb"])
    profiles = []
    for i in range(num_clients):
        mem = round(float(memory[i]) * GIB)
        profiles.append(
            DeviceProfile(
                f"client-{i}",
                _tier_by_memory(mem),
                mem,
                float(speed[i]),
                float(up[i]) * MB,
                float(down[i]) * MB,
            )
        )
    return profiles


# --- files ------------------------------------------------------------------------

_UNITS: Mapping[str, tuple[str, float]] = {
    "memory_bytes": ("memory_bytes", 1),
    "memory_gib": ("memory_bytes", GIB),
    "speed_flops": ("speed", 1),
    "uplink_bytes_per_s": ("uplink_bytes_per_s", 1),
    "uplink_mbps": ("uplink_bytes_per_s", MBIT),
    "downlink_bytes_per_s": ("downlink_bytes_per_s", 1),
    "downlink_mbps": ("downlink_bytes_per_s", MBIT),
}
_TEXT_KEYS = ("name", "tier")


def load_profiles(path: str | Path) -> list[DeviceProfile]:
    """Read device profiles, one per row, from a CSV, JSON or TOML file.

    Keys (CSV header columns, or keys of each JSON object / TOML table); give
    exactly one key of each numeric pair:

    * ``memory_bytes`` or ``memory_gib``: training memory budget.
    * ``speed_flops``: sustained compute speed in FLOP/s.
    * ``uplink_bytes_per_s`` or ``uplink_mbps`` (megabits/s; 8 Mbps = 1 MB/s).
    * ``downlink_bytes_per_s`` or ``downlink_mbps`` (megabits/s).
    * optional ``name`` (default ``client-<row>``) and ``tier`` (default ``file``).

    JSON holds a list of objects or ``{"devices": [...]}``; TOML holds an array
    of tables ``[[devices]]``.

    Args:
        path: File ending in ``.csv``, ``.json`` or ``.toml``.

    Returns:
        The profiles in file order.

    Raises:
        ValueError: Unknown suffix, no rows, an unknown or missing key, or a
            value that is not a positive number (the message names the row).
    """
    p = Path(path)
    rows = _read_rows(p)
    if not rows:
        raise ValueError(f"{p}: no device rows; add at least one")
    return [_parse_row(row, i, p) for i, row in enumerate(rows)]


def _read_rows(path: Path) -> list[Mapping[str, Any]]:
    suffix = path.suffix.lower()
    if suffix == ".csv":
        with path.open(newline="") as f:
            return list(csv.DictReader(f))
    if suffix == ".json":
        data: Any = json.loads(path.read_text())
    elif suffix == ".toml":
        data = tomllib.loads(path.read_text())
    else:
        raise ValueError(f"{path}: unknown suffix {suffix!r}; use .csv, .json, .toml")
    if isinstance(data, dict):
        data = data.get("devices")
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise ValueError(
            f"{path}: expected a list of device objects (JSON) or "
            "[[devices]] tables (JSON/TOML key 'devices')"
        )
    return data


def _parse_row(row: Mapping[str, Any], index: int, path: Path) -> DeviceProfile:
    where = f"{path} row {index}"
    unknown = (
        {str(k) for k in row} - set(_UNITS) - set(_TEXT_KEYS)
    )  # None: extra CSV cell
    if unknown:
        allowed = ", ".join([*_UNITS, *_TEXT_KEYS])
        raise ValueError(f"{where}: unknown keys {sorted(unknown)}; allowed: {allowed}")
    values: dict[str, float] = {}
    for key, (field, scale) in _UNITS.items():
        if key in row:
            if field in values:
                raise ValueError(f"{where}: give only one key for {field}, got both")
            values[field] = _number(row[key], key, where) * scale
    missing = [f for f in _FIELDS if f not in values]
    if missing:
        options = [
            " or ".join(k for k, (f, _) in _UNITS.items() if f == m) for m in missing
        ]
        raise ValueError(f"{where}: missing {'; '.join(options)}")
    return DeviceProfile(
        name=str(row.get("name") or f"client-{index}"),
        tier=str(row.get("tier") or "file"),
        memory_bytes=round(values["memory_bytes"]),
        speed=values["speed"],
        uplink_bytes_per_s=values["uplink_bytes_per_s"],
        downlink_bytes_per_s=values["downlink_bytes_per_s"],
    )


def _number(raw: object, key: str, where: str) -> float:
    try:
        if isinstance(raw, bool) or not isinstance(raw, str | int | float):
            raise TypeError
        value = float(raw)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: {key}={raw!r} is not a number") from None
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{where}: {key}={raw!r} must be a finite number > 0")
    return value


def draw_profiles(spec: str, num_clients: int, seed: int) -> list[DeviceProfile]:
    """Profiles for ``num_clients`` clients from a distribution name or a file.

    Args:
        spec: A name in :data:`DEVICE_DISTRIBUTIONS`, or ``file:PATH`` for
            :func:`load_profiles`; a file's first ``num_clients`` rows are used.
        num_clients: Number of clients (>= 1).
        seed: Non-negative seed; the same seed gives the same profiles.

    Returns:
        One profile per client.

    Raises:
        KeyError: ``spec`` names no registered distribution (lists the choices).
        ValueError: ``num_clients`` or ``seed`` out of range, or the file has
            fewer rows than ``num_clients``.
    """
    if (
        isinstance(num_clients, bool)
        or not isinstance(num_clients, int)
        or num_clients < 1
    ):
        raise ValueError(f"num_clients must be an integer >= 1, got {num_clients!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
    if spec.startswith("file:"):
        return _first_rows(load_profiles(spec.removeprefix("file:")), num_clients, spec)
    return DEVICE_DISTRIBUTIONS.get(spec)(num_clients, np.random.default_rng(seed))


def _first_rows(
    profiles: Sequence[DeviceProfile], num_clients: int, spec: str
) -> list[DeviceProfile]:
    if len(profiles) < num_clients:
        raise ValueError(
            f"{spec} has {len(profiles)} device rows but num_clients={num_clients}; "
            "add rows or lower num_clients"
        )
    return list(profiles[:num_clients])
