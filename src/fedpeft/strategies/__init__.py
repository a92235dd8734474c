"""Server-side strategies over plain arrays, chosen by name from :data:`STRATEGIES`.

Each strategy module holds the strategy class and its options class and
registers both (:func:`register_strategy`); importing this package imports
every module in it, so a new strategy is one new module here (a strategy
defined outside the package registers itself the same way). :mod:`.config`
holds the options base class and the registry.
"""

from fedpeft.registry import register_submodules
from fedpeft.strategies.base import Strategy, build_strategy, register_strategy
from fedpeft.strategies.config import (
    STRATEGIES,
    StrategyOptions,
    strategy_config,
)
from fedpeft.strategies.dynamic import Dynamic, DynamicOptions
from fedpeft.strategies.fedavg import FedAvg, FedAvgOptions
from fedpeft.strategies.fedopt import (
    FedAdam,
    FedAdamOptions,
    FedOpt,
    FedOptOptions,
    FedYogi,
    FedYogiOptions,
)
from fedpeft.strategies.fedprompt import FedPrompt, FedPromptOptions
from fedpeft.strategies.fedprox import FedProx, FedProxOptions
from fedpeft.strategies.sampling import sample_clients, sample_size, select_clients

register_submodules(__name__, __path__)

__all__ = [
    "STRATEGIES",
    "Dynamic",
    "DynamicOptions",
    "FedAdam",
    "FedAdamOptions",
    "FedAvg",
    "FedAvgOptions",
    "FedOpt",
    "FedOptOptions",
    "FedPrompt",
    "FedPromptOptions",
    "FedProx",
    "FedProxOptions",
    "FedYogi",
    "FedYogiOptions",
    "Strategy",
    "StrategyOptions",
    "build_strategy",
    "register_strategy",
    "sample_clients",
    "sample_size",
    "select_clients",
    "strategy_config",
]
