"""Partition options: the base every partitioner's options extend, and the
registry of partitioners (options class + :class:`~.base.Partitioner`).

Each partitioner's module declares its options class beside its split
function and registers both with :func:`~.base.register_partitioner`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, ClassVar

from pydantic import BeforeValidator, Field, SerializeAsAny

from fedpeft.registry import ConfigRegistry, Options

if TYPE_CHECKING:
    from fedpeft.data.partition.base import Partitioner


class PartitionConfig(Options):
    """The ``[partition]`` section's keys common to every partitioner."""

    headline: ClassVar[tuple[str, ...]] = ()
    """Options a one-line summary of the partition names (see :meth:`summary`)."""

    method: str = Field(
        "dirichlet",
        description="registered partitioner: iid, dirichlet, dirichlet-balanced, "
        "quantity, feature, pathological",
    )
    min_size: int = Field(10, ge=1, description="minimum examples per client")
    val_fraction: float = Field(
        0.1, ge=0.0, lt=1.0, description="share of each shard for validation"
    )

    def summary(self) -> str:
        """The method and its headline options, e.g. ``"dirichlet alpha=0.5"``."""
        shown = [f"{k}={_format(getattr(self, k))}" for k in self.headline]
        return " ".join([self.method, *shown])


def _format(value: object) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


PARTITIONERS: ConfigRegistry[PartitionConfig, Partitioner[Any]] = ConfigRegistry(
    "partitioner", section="partition", default="dirichlet"
)

PartitionField = Annotated[
    SerializeAsAny[PartitionConfig], BeforeValidator(PARTITIONERS.validate)
]
"""The ``partition`` section's type: the options class registered under
``method``."""


def partition_config(method: str | None = None, /, **options: Any) -> PartitionConfig:
    """The options of a registered partitioner, validated.

    Raises:
        ConfigError: for an unknown partitioner or a bad or foreign option.
    """
    return PARTITIONERS.create(method, **options)
