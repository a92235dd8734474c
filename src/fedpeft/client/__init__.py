"""Local training on one client's shard."""

from fedpeft.client.evaluate import EvalResult, evaluate, evaluate_many
from fedpeft.client.local import local_update, train_adapter
from fedpeft.client.probe import fit_head
from fedpeft.client.steps import LocalTrainStats

__all__ = [
    "EvalResult",
    "LocalTrainStats",
    "evaluate",
    "evaluate_many",
    "fit_head",
    "local_update",
    "train_adapter",
]
