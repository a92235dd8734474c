"""PEFT options: the base every method's options extend, and the registry of
methods (options class + adapter class).

Each method's folder holds ``config.py`` (its options, pydantic only) and an
``__init__`` that registers them with the adapter class by name
(``"fedpeft.peft.<method>.model:<Class>"``), imported on the first build, so
reading a config never imports torch or transformers.

An adapter class is its own factory: it is called as
``cls(backbone, num_classes, generator=..., label_names=..., **options)`` with
the options its config class declares (see :meth:`PeftConfig.adapter_options`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BeforeValidator, Field, SerializeAsAny

from fedpeft.registry import ConfigRegistry, Options

if TYPE_CHECKING:
    from fedpeft.peft.base import AdapterClassifier

AdapterFactory = Callable[..., "AdapterClassifier"]


class PeftConfig(Options):
    """The ``[peft]`` section's keys common to every method."""

    method: str = Field("prompt", description="registered PEFT method")
    head_init: Literal["class-means", "lda", "probe", "zeros", "random"] = Field(
        "class-means",
        description="class-means: the head from the clients' summed per-class "
        "feature statistics (exact, secure-aggregation friendly); lda: the same "
        "with a full covariance, shrinkage picked on the clients' validation "
        "splits (recommended under strong label skew: docs/benchmarks.md); probe: "
        "the mean of the clients' linear-probe heads; all before round 1",
    )

    def adapter_options(self) -> dict[str, Any]:
        """The keyword options of the method's adapter: every field its config
        class adds to :class:`PeftConfig`."""
        common = PeftConfig.model_fields
        return {k: getattr(self, k) for k in type(self).model_fields if k not in common}


PEFT_METHODS: ConfigRegistry[PeftConfig, AdapterFactory] = ConfigRegistry(
    "PEFT method", section="peft", default="prompt"
)

PeftField = Annotated[
    SerializeAsAny[PeftConfig], BeforeValidator(PEFT_METHODS.validate)
]
"""The ``peft`` section's type: the config class registered under ``method``."""


def peft_config(method: str | None = None, /, **options: Any) -> PeftConfig:
    """The options of a registered method, validated (e.g. the full-finetune
    baseline's ``peft_config("full", head_init="zeros")``).

    Raises:
        ConfigError: for an unknown method or a bad or foreign option.
    """
    return PEFT_METHODS.create(method, **options)
