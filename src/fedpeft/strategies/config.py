"""Strategy options: the base every strategy's options extend, and the registry
of strategies (options class + strategy class).

Each strategy's module declares its options class beside the strategy and
registers both with :func:`~fedpeft.strategies.base.register_strategy`; the
package imports every module in it, so a new strategy is one new module. This
module imports pydantic only, so reading a config stays light.

A strategy class is its own factory: it is called with exactly the options its
options class adds to :class:`StrategyOptions` (see
:meth:`StrategyOptions.strategy_options`); the common keys (how many clients a
round samples) are read by the round loop, not by the strategy.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import BeforeValidator, Field, SerializeAsAny

from fedpeft.registry import ConfigRegistry, Options

if TYPE_CHECKING:
    from fedpeft.strategies.base import Strategy

StrategyFactory = Callable[..., "Strategy"]


class StrategyOptions(Options):
    """The ``[strategy]`` section's keys common to every strategy."""

    name: str = Field(
        "fedavg",
        description="registered strategy: fedavg, fedprompt, fedprox, dynamic, "
        "fedadam, fedyogi",
    )
    fraction_fit: float = Field(
        0.5, gt=0.0, le=1.0, description="share of clients sampled per round"
    )
    min_fit_clients: int = Field(2, ge=1)
    server_momentum: float = Field(
        0.0,
        ge=0.0,
        lt=1.0,
        description="FedAvgM: the server steps by a velocity v <- beta*v + mean "
        "update (0 = off; not with fedadam/fedyogi)",
    )
    scaffold: bool = Field(
        False,
        description="SCAFFOLD control variates: each client's gradient is corrected "
        "by c - c_k (doubles the bytes; not with secure aggregation, DP or device "
        "profiles)",
    )

    def strategy_options(self) -> dict[str, Any]:
        """The keyword options of the strategy's constructor: every field its
        options class adds to :class:`StrategyOptions`."""
        common = StrategyOptions.model_fields
        return {k: getattr(self, k) for k in type(self).model_fields if k not in common}


STRATEGIES: ConfigRegistry[StrategyOptions, StrategyFactory] = ConfigRegistry(
    "strategy", section="strategy", tag="name", default="fedavg"
)
"""Strategies by name: options class + strategy class; each strategy module
registers its own."""

StrategyField = Annotated[
    SerializeAsAny[StrategyOptions], BeforeValidator(STRATEGIES.validate)
]
"""The ``strategy`` section's type: the options class registered under ``name``."""


def strategy_config(name: str | None = None, /, **options: Any) -> StrategyOptions:
    """The options of a registered strategy, validated (e.g. the full-finetune
    baseline's ``strategy_config("fedavg", fraction_fit=0.2)``).

    Raises:
        ConfigError: for an unknown strategy or a bad or foreign option.
    """
    return STRATEGIES.create(name, **options)
