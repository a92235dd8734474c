"""The run configuration: one validated, frozen object with a section per component.

Load it from TOML plus ``--set a.b=c`` overrides with :func:`load_config`. Unknown
keys, wrong types and out-of-range values fail before any work starts, with a
message naming the key, the bad value and what is allowed.
"""

from __future__ import annotations

import difflib
import re
import tomllib
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from fedpeft.registry import ConfigError as ConfigError
from fedpeft.registry import describe_error

# isort: split
# After ConfigError is bound: a module of fedpeft.data that imports it from here
# is loaded by the next line, while this module is still loading.
from fedpeft.data.partition.config import PARTITIONERS, PartitionField
from fedpeft.peft.config import PEFT_METHODS, PeftField
from fedpeft.strategies.config import STRATEGIES, StrategyField

DEVICES = "cpu, cuda, cuda:N or auto"
DEVICE_PATTERN = r"^(auto|cpu|cuda(:\d+)?)$"
BASELINES = ("centralized", "local-only", "linear-probe", "zero-shot", "full-finetune")


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


class ModelSection(Section):
    backbone: str = Field(
        "minilm-l6", description="registered name or local HF model dir"
    )
    max_length: int = Field(
        64, ge=8, le=4096, description="tokens per example after truncation"
    )
    precision: Literal["fp32", "bf16"] = Field(
        "fp32", description="backbone compute dtype (bf16 autocast); adapters stay fp32"
    )
    eval_precision: Literal["fp32", "bf16"] = Field(
        "bf16", description="backbone compute dtype for evaluation"
    )
    device: str = Field(
        "cpu",
        description="where the backbone and adapters compute: cpu, cuda, cuda:N "
        "or auto (a GPU when torch sees one)",
    )

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        if re.fullmatch(DEVICE_PATTERN, value) is None:
            raise ValueError(f"unknown device {value!r}; choose {DEVICES}")
        return value


class DataSection(Section):
    corpus: str = Field(
        "rotten-tomatoes", description="registered corpus, csv:PATH or jsonl:PATH"
    )
    text_column: str = "text"
    label_column: str = "label"
    test_fraction: float = Field(0.2, gt=0.0, lt=1.0)
    split_seed: int = Field(
        0, ge=0, description="seed of the train/test split (fixed across runs)"
    )
    max_train: int | None = Field(
        2000, ge=10, description="subsample of the training pool"
    )
    max_test: int | None = Field(600, ge=10, description="subsample of the test set")
    max_chars: int | None = Field(2000, ge=16)
    encoding: str = Field(
        "utf-8", description="text encoding of a csv/jsonl file, e.g. latin-1"
    )
    drop_duplicates: bool = Field(
        True,
        description="drop repeated texts so no test text is also a training text "
        "(false: keep them and warn; the corpora as read before 2026-12-04)",
    )


PartitionSection = PartitionField
"""The ``[partition]`` section: the options of the partitioner named by
``partition.method`` (see :mod:`fedpeft.data.partition.config`)."""

PeftSection = PeftField
"""The ``[peft]`` section: the options of the method named by ``peft.method``
(see :mod:`fedpeft.peft.config`)."""


class ClientSection(Section):
    local_epochs: int = Field(1, ge=0, le=1000)
    local_steps: int = Field(
        0, ge=0, description="if > 0, a fixed number of steps instead of epochs"
    )
    batch_size: int = Field(16, ge=1, le=4096)
    lr: float = Field(
        3e-3, gt=0.0, le=10.0, description="AdamW learning rate of the method's tensors"
    )
    head_lr: float = Field(
        1e-3, ge=0.0, le=10.0, description="AdamW learning rate of the head"
    )
    full_lr: float = Field(
        5e-5,
        gt=0.0,
        le=1.0,
        description="backbone learning rate of the full fine-tuning baseline",
    )
    weight_decay: float = Field(0.0, ge=0.0)
    max_grad_norm: float = Field(
        0.0, ge=0.0, description="clip the local gradient norm (0 = off)"
    )
    probe_iters: int = Field(
        100, ge=1, description="L-BFGS iterations of the head-fitting linear probe"
    )
    probe_l2: float = Field(1e-3, ge=0.0, description="L2 strength of the linear probe")


StrategySection = StrategyField
"""The ``[strategy]`` section: the options of the strategy named by
``strategy.name`` (see :mod:`fedpeft.strategies.config`)."""


class ClientDPSection(Section):
    """Client-level DP-FedAvg (McMahan et al. 2018); see fedpeft.privacy.

    Exactly one of ``noise_multiplier`` and ``target_epsilon`` is set.
    """

    clip_norm: float = Field(
        0.1,
        gt=0.0,
        strict=True,
        allow_inf_nan=False,
        description="bound C on each update's L2 norm",
    )
    delta: float = Field(
        1e-3, gt=0.0, lt=1.0, description="δ; keep it below 1/num_clients"
    )
    noise_multiplier: float | None = Field(
        None,
        gt=0.0,
        strict=True,
        allow_inf_nan=False,
        description="σ (noise std σ·C)",
    )
    target_epsilon: float | None = Field(
        None,
        gt=0.0,
        strict=True,
        allow_inf_nan=False,
        description="calibrate σ so that all rounds stay within ε",
    )
    mode: Literal["central", "distributed"] = "central"
    accountant: Literal["rdp", "pld"] = "rdp"

    @model_validator(mode="after")
    def _noise_source(self) -> ClientDPSection:
        _one_noise_source(self.noise_multiplier, self.target_epsilon)
        return self


class RecordDPSection(Section):
    """Record-level DP-SGD inside every client (Abadi et al. 2016).

    Exactly one of ``noise_multiplier`` and ``target_epsilon`` is set.
    """

    clip_norm: float = Field(
        1.0,
        gt=0.0,
        strict=True,
        allow_inf_nan=False,
        description="per-example gradient bound",
    )
    delta: float = Field(1e-4, gt=0.0, lt=1.0)
    noise_multiplier: float | None = Field(
        None, gt=0.0, strict=True, allow_inf_nan=False
    )
    target_epsilon: float | None = Field(
        None,
        gt=0.0,
        strict=True,
        allow_inf_nan=False,
        description="per client, whole run",
    )
    accountant: Literal["rdp", "pld"] = "rdp"

    @model_validator(mode="after")
    def _noise_source(self) -> RecordDPSection:
        _one_noise_source(self.noise_multiplier, self.target_epsilon)
        return self


def _one_noise_source(sigma: float | None, target: float | None) -> None:
    """Refuse a DP section with both or neither of σ and a target ε."""
    if sigma is not None and target is not None:
        raise ValueError(
            f"set exactly one of noise_multiplier (got {sigma!r}) and "
            f"target_epsilon (got {target!r}), not both: σ is either given or "
            "calibrated to reach ε"
        )
    if sigma is None and target is None:
        raise ValueError(
            "set exactly one of noise_multiplier (σ) and target_epsilon (σ "
            "calibrated so the whole run stays within ε); neither is set"
        )


class PrivacySection(Section):
    secagg: bool = Field(False, description="secure aggregation of the client updates")
    secagg_bits: int = Field(
        32, ge=8, le=62, description="masked values live in Z_(2^b)"
    )
    secagg_clip_range: float = Field(
        1.0, gt=0.0, description="per-coordinate range [-r, r] before quantization"
    )
    secagg_threshold: float = Field(
        0.5, gt=0.0, le=1.0, description="Shamir t / neighbours"
    )
    secagg_neighbours: Literal["complete", "log2"] = "complete"
    secure: bool = Field(
        False, description="masks, keys and noise from OS entropy (not reproducible)"
    )
    client_dp: ClientDPSection | None = None
    record_dp: RecordDPSection | None = None


class FederationSection(Section):
    num_clients: int = Field(10, ge=1, le=100_000)
    rounds: int = Field(6, ge=0, le=100_000)
    sampling: Literal["fixed", "poisson"] = Field(
        "fixed",
        description="fixed: m clients without replacement; poisson: each with prob q",
    )
    eval_every: int = Field(
        1, ge=1, description="evaluate the global model every k rounds"
    )
    eval_batch_size: int = Field(128, ge=1)
    batch_clients: bool = Field(
        True,
        description="train the selected clients together: one forward/backward over "
        "the shared backbone serves all of them (methods with a per-example forward: "
        "prompt, prefix, lora; others train one after another)",
    )
    bucket_size: int = Field(
        16,
        ge=0,
        description="with batch_clients: sort each shared step's examples by length "
        "and run them in groups of about this many, each padded only to its own "
        "longest (0 = one padded batch); the gradient is the same",
    )
    bucket_threads: int = Field(
        2,
        ge=1,
        le=64,
        description="with batch_clients: run a step's buckets on this many threads "
        "(prompt, prefix); gradients are summed in a fixed order",
    )
    update_norm_ratio: float = Field(
        20.0,
        ge=0.0,
        description="reject a client update whose L2 norm exceeds this many times "
        "the round's (lower) median norm; 0 = off (finite values are always required)",
    )


class BaselinesSection(Section):
    run: tuple[str, ...] = Field(
        ("centralized", "linear-probe"), description=", ".join(BASELINES)
    )

    @field_validator("run")
    @classmethod
    def _known(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for name in value:
            if name not in BASELINES:
                raise ValueError(
                    f"unknown baseline {name!r}; choose from {', '.join(BASELINES)}"
                )
        return value


def parse_lora_size(text: str) -> tuple[int, int]:
    """``"RANK@LAYERS"`` (or ``"RANK"`` for all layers) as ``(rank, layers)``."""
    rank, _, layers = str(text).partition("@")
    try:
        parsed = int(rank), int(layers or 0)
    except ValueError:
        parsed = (0, -1)
    if parsed[0] < 1 or parsed[1] < 0:
        raise ValueError(
            f"menu entry {text!r} is not RANK@TOP_LAYERS with rank >= 1 and "
            "layers >= 0 (0 = all layers), e.g. '8@2'"
        )
    return parsed


class DevicesSection(Section):
    """Per-client device profiles and LoRA sizes allocated to fit them."""

    profiles: str | None = Field(
        None,
        description="device population: uniform, tiers, phones-and-servers or "
        "file:PATH (unset: every client trains the configured adapter)",
    )
    policy: str = Field(
        "largest-fit", description="allocation: fixed, largest-fit, budget-proportional"
    )
    deadline_s: float | None = Field(
        None, gt=0.0, description="round deadline: predicted compute + transfer seconds"
    )
    menu: tuple[str, ...] = Field(
        ("2@1", "4@2", "8@4", "16@0"),
        min_length=1,
        description="LoRA sizes RANK@TOP_LAYERS (0 = all layers), smallest first",
    )
    fixed_index: int = Field(-1, description="menu entry of the fixed policy")
    rule: Literal["hetlora", "flexlora", "ffa", "fedavg"] = Field(
        "hetlora", description="aggregation of the mixed-size LoRA updates"
    )

    @field_validator("menu")
    @classmethod
    def _sizes(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for entry in value:
            parse_lora_size(entry)
        return value


class RunConfig(Section):
    """Everything one experiment needs. Each component receives only its section."""

    name: str = Field("default", description="the run directory: output_dir/name")
    seed: int = Field(0, ge=0)
    output_dir: str = "runs"
    threads: int = Field(0, ge=0, description="torch CPU threads (0 = all cores)")
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
