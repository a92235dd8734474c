"""The run configuration: one validated, frozen object with a section per component.

Load it from TOML plus ``--set a.b=c`` overrides with :func:`load_config`. Unknown
keys, wrong types and out-of-range values fail before any work starts, with a
message naming the key, the bad value and what is allowed.

The sections are defined next to what they configure: the plain ones in
:mod:`fedpeft.config_sections`, ``[privacy]`` in :mod:`fedpeft.config_privacy`,
the registry-chosen ones (partition, peft, strategy) in each component's ``config``
module. This module composes them into :class:`RunConfig` and loads it; every
section name is importable from here.
"""

from __future__ import annotations

import difflib
import re
import tomllib
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from fedpeft.config_privacy import ClientDPSection, PrivacySection, RecordDPSection
from fedpeft.config_sections import (
    BASELINES,
    DEVICE_PATTERN,
    DEVICES,
    BaselinesSection,
    ClientSection,
    DataSection,
    DevicesSection,
    FederationSection,
    ModelSection,
    Section,
    parse_lora_size,
)
from fedpeft.config_threats import AttackSection, RobustSection, threat_refusal
from fedpeft.registry import ConfigError as ConfigError
from fedpeft.registry import describe_error

# isort: split
# After ConfigError is bound: a module of fedpeft.data that imports it from here
# is loaded by the next line, while this module is still loading.
from fedpeft.data.partition.config import PARTITIONERS, PartitionField
from fedpeft.fedsp.config import FedSPSection
from fedpeft.peft.config import PEFT_METHODS, PeftField
from fedpeft.strategies.config import STRATEGIES, StrategyField

__all__ = [
    "BASELINES",
    "DEVICES",
    "DEVICE_PATTERN",
    "AttackSection",
    "BaselinesSection",
    "ClientDPSection",
    "ClientSection",
    "ConfigError",
    "DataSection",
    "DevicesSection",
    "FedSPSection",
    "FederationSection",
    "ModelSection",
    "PartitionSection",
    "PeftSection",
    "PrivacySection",
    "RecordDPSection",
    "RobustSection",
    "RunConfig",
    "Section",
    "StrategySection",
    "apply_overrides",
    "build_config",
    "load_config",
    "parse_lora_size",
    "parse_override",
]

PartitionSection = PartitionField
"""The ``[partition]`` section: the options of the partitioner named by
``partition.method`` (see :mod:`fedpeft.data.partition.config`)."""

PeftSection = PeftField
"""The ``[peft]`` section: the options of the method named by ``peft.method``
(see :mod:`fedpeft.peft.config`)."""

StrategySection = StrategyField
"""The ``[strategy]`` section: the options of the strategy named by
``strategy.name`` (see :mod:`fedpeft.strategies.config`)."""


class RunConfig(Section):
    """Everything one experiment needs. Each component receives only its section."""

    name: str = Field("default", description="the run directory: output_dir/name")
    seed: int = Field(0, ge=0)
    output_dir: str = "runs"
    threads: int = Field(0, ge=0, description="torch CPU threads (0 = all cores)")
    retain_freed_memory: bool = Field(
        True,
        description="keep freed memory in the process for reuse (glibc), instead "
        "of faulting fresh pages in on every step; false = glibc's defaults",
    )
    model: ModelSection = Field(default_factory=ModelSection)
    data: DataSection = Field(default_factory=DataSection)
    partition: PartitionSection = Field(default_factory=PARTITIONERS.default)
    peft: PeftSection = Field(default_factory=PEFT_METHODS.default)
    client: ClientSection = Field(default_factory=ClientSection)
    strategy: StrategySection = Field(default_factory=STRATEGIES.default)
    federation: FederationSection = Field(default_factory=FederationSection)
    baselines: BaselinesSection = Field(default_factory=BaselinesSection)
    privacy: PrivacySection = Field(default_factory=PrivacySection)
    devices: DevicesSection = Field(default_factory=DevicesSection)
    fedsp: FedSPSection = Field(default_factory=FedSPSection)
    robust: RobustSection = Field(default_factory=RobustSection)
    attack: AttackSection = Field(default_factory=AttackSection)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        # One path segment: "." or ".." would write into or beside output_dir.
        if re.fullmatch(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,199}", value) is None:
            raise ValueError(
                "must be one directory name (output_dir/name): 1 to 200 letters, "
                "digits, '_', '-' or '.', not starting with '.'; e.g. name=my-run"
            )
        return value

    @model_validator(mode="after")
    def _gpu_defaults(self) -> RunConfig:
        """On a named GPU an unset ``federation.bucket_size`` is 0: one padded
        batch per shared step (small kernels leave a GPU idle; the CPU's
        length buckets made rounds 4-5x slower on an H200)."""
        fed = self.federation
        if self.model.device.startswith("cuda") and (
            "bucket_size" not in fed.model_fields_set
        ):
            update = {"bucket_size": 0}
            object.__setattr__(self, "federation", fed.model_copy(update=update))
        return self

    @model_validator(mode="after")
    def _threat_combinations(self) -> RunConfig:
        """Refuse a robust rule or an attack the rest of the config cannot
        serve (:func:`fedpeft.config_threats.threat_refusal`)."""
        why = threat_refusal(
            self.robust,
            self.attack,
            secagg=self.privacy.secagg,
            client_dp=self.privacy.client_dp is not None,
            devices=self.devices.profiles is not None,
            method=self.peft.method,
            batch_clients=self.federation.batch_clients,
            head_init=self.peft.head_init,
        )
        if why is not None:
            raise ValueError(why)
        return self

    @model_validator(mode="after")
    def _label_skew_combinations(self) -> RunConfig:
        """Refuse label-skew algorithms where their math or the simulation
        cannot follow (each message names the setting to change)."""
        p, c = self.privacy, self.client
        if p.record_dp is not None and "loss" not in c.model_fields_set:
            # The default loss uses the client's class counts; DP-SGD's
            # per-example analysis needs plain cross-entropy.
            c = c.model_copy(update={"loss": "cross-entropy"})
            object.__setattr__(self, "client", c)
        if p.record_dp is not None and c.loss != "cross-entropy":
            raise ValueError(
                f"client.loss = {c.loss!r} makes an example's loss depend on the "
                "client's class counts, outside record-level DP-SGD's per-example "
                "analysis; use client.loss = 'cross-entropy' with privacy.record_dp"
            )
        if self.strategy.server_momentum > 0 and self.strategy.name in (
            "fedadam",
            "fedyogi",
        ):
            raise ValueError(
                f"strategy {self.strategy.name!r} keeps its own first moment; set "
                "strategy.server_momentum = 0, or use fedavg, fedprompt, fedprox "
                "or dynamic with momentum"
            )
        if self.strategy.scaffold:
            if p.secagg or p.client_dp is not None or p.record_dp is not None:
                raise ValueError(
                    "strategy.scaffold keeps every client's control variate on the "
                    "simulated server, which secure aggregation and DP forbid it to "
                    "see; set strategy.scaffold = false, or drop privacy.secagg / "
                    "client_dp / record_dp"
                )
            if self.devices.profiles is not None:
                raise ValueError(
                    "strategy.scaffold needs one adapter layout for every client; "
                    "unset devices.profiles or set strategy.scaffold = false"
                )
        if (
            c.head == "frozen"
            and self.peft.head_init == "zeros"
            and c.head_unfreeze_round != 1
        ):
            raise ValueError(
                "client.head = 'frozen' with peft.head_init = 'zeros' gives every "
                "class the same logit and the body no gradient; use head_init = "
                "'class-means', 'probe' or 'random'"
            )
        if self.peft.head_init == "lda" and self.partition.val_fraction <= 0:
            raise ValueError(
                "peft.head_init = 'lda' picks its covariance shrinkage on the "
                "clients' validation splits, and partition.val_fraction = 0 leaves "
                "none; set partition.val_fraction > 0 (e.g. 0.1) or use head_init = "
                "'class-means'"
            )
        return self

    @property
    def run_dir(self) -> Path:
        return Path(self.output_dir) / self.name

    def to_dict(self) -> dict[str, Any]:
        """Plain data (TOML-serialisable: ``None`` values dropped)."""
        return _drop_none(self.model_dump(mode="json"))


def _drop_none(tree: dict[str, Any]) -> dict[str, Any]:
    return {
        k: _drop_none(v) if isinstance(v, dict) else v
        for k, v in tree.items()
        if v is not None
    }


def parse_override(text: str) -> tuple[list[str], Any]:
    """Parse ``a.b=c`` into ``(["a", "b"], value)``; ``c`` is read as a TOML value
    (numbers, booleans, arrays) and falls back to a plain string."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {text!r} is not of the form section.key=value")
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    return [p.strip() for p in key.split(".")], value


def apply_overrides(tree: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Return a copy of ``tree`` with each ``a.b=c`` override set."""
    out: dict[str, Any] = _deep_copy(tree)
    for text in overrides:
        path, value = parse_override(text)
        node = out
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(
                    f"override {text!r}: {part!r} is a value, not a section"
                )
            node = child
        node[path[-1]] = value
    return out


def _deep_copy(tree: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _deep_copy(v) if isinstance(v, Mapping) else v for k, v in tree.items()}


def build_config(tree: Mapping[str, Any]) -> RunConfig:
    """Validate a nested mapping into a :class:`RunConfig`.

    Raises:
        ConfigError: listing every bad key with its value and what is allowed.
    """
    try:
        return RunConfig.model_validate(dict(tree))
    except ValidationError as err:
        lines = [_describe_error(e) for e in err.errors()]
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(lines)) from None


def _describe_error(error: Mapping[str, Any]) -> str:
    loc = [str(p) for p in error["loc"]]
    key = ".".join(loc)
    if error["type"] == "extra_forbidden":
        allowed = _allowed_keys(loc[:-1])
        close = difflib.get_close_matches(loc[-1], allowed, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        return f"unknown key {key!r}.{hint} Allowed here: {', '.join(allowed)}"
    return describe_error(error)


def _allowed_keys(section_path: Sequence[str]) -> list[str]:
    model: type[BaseModel] = RunConfig
    for part in section_path:
        field = model.model_fields.get(part)
        if field is None:
            return []
        # an optional section (``ClientDPSection | None``) offers its model's keys
        options = [field.annotation, *typing.get_args(field.annotation)]
        sections = [
            t for t in options if isinstance(t, type) and issubclass(t, BaseModel)
        ]
        if not sections:
            return []
        model = sections[0]
    return list(model.model_fields)


def load_config(
    path: str | Path | None = None, overrides: Sequence[str] = ()
) -> RunConfig:
    """Read a TOML file (or the defaults when ``path`` is None) and apply overrides.

    Raises:
        ConfigError: for a missing or malformed file, or any invalid value.
    """
    tree: dict[str, Any] = {}
    if path is not None:
        file = Path(path)
        if not file.is_file():
            raise ConfigError(f"config file {file} does not exist")
        data = file.read_bytes()
        try:
            tree = tomllib.loads(data.decode("utf-8"))
        except UnicodeDecodeError as err:
            line = data[: err.start].decode("utf-8").count("\n") + 1
            raise ConfigError(
                f"config file {file} is not UTF-8: byte 0x{data[err.start]:02x} at "
                f"offset {err.start} (line {line}); config files must be UTF-8, "
                "save it in that encoding"
            ) from None
        except tomllib.TOMLDecodeError as err:
            raise ConfigError(f"config file {file} is not valid TOML: {err}") from None
    return build_config(apply_overrides(tree, overrides))
