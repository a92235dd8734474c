"""Baselines run in the same harness as the federated methods."""

from fedpeft.baselines.centralized import run_centralized
from fedpeft.baselines.local_only import run_local_only
from fedpeft.baselines.probe import run_linear_probe, run_zero_shot

__all__ = ["run_centralized", "run_linear_probe", "run_local_only", "run_zero_shot"]
