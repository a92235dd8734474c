"""Server-side strategies over plain arrays, chosen by name from :data:`STRATEGIES`.

Importing this package imports every strategy module, so each registers itself.
"""

from fedpeft.strategies.base import STRATEGIES, Strategy, build_strategy
from fedpeft.strategies.dynamic import Dynamic
from fedpeft.strategies.fedavg import FedAvg
from fedpeft.strategies.fedopt import FedAdam, FedOpt, FedYogi
from fedpeft.strategies.fedprompt import FedPrompt
from fedpeft.strategies.fedprox import FedProx
from fedpeft.strategies.sampling import sample_clients, sample_size, select_clients

__all__ = [
    "STRATEGIES",
    "Dynamic",
    "FedAdam",
    "FedAvg",
    "FedOpt",
    "FedPrompt",
    "FedProx",
    "FedYogi",
    "Strategy",
    "build_strategy",
    "sample_clients",
    "sample_size",
    "select_clients",
]
