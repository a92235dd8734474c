"""Differential privacy: clipping, noise, accounting (dp-accounting), calibration.

Client-level DP follows DP-FedAvg (McMahan et al. 2018): clip each client's
update to C, add Gaussian noise σ·C to the equal-weight sum (on the server, or
σ·C/√m per client under secure aggregation), divide by the expected number of
clients, and account with the client sampling actually used. Record-level DP is
DP-SGD inside each client (Abadi et al. 2016, :mod:`fedpeft.client.dp_local`); its
per-example clipping and noise are in :mod:`fedpeft.privacy.dpsgd` (not imported
here: it needs torch).
"""

from fedpeft.privacy.accounting import (
    ACCOUNTANT_KINDS,
    SAMPLINGS,
    AccountantKind,
    PrivacyAccountant,
    PrivacyBudget,
    Sampling,
    UnsupportedAccountingError,
    client_level_event,
    epsilon_after,
    epsilon_for,
    neighboring_relation,
    record_level_epsilon,
    record_level_event,
)
from fedpeft.privacy.calibration import (
    calibrate_noise,
    calibrate_noise_multiplier,
    calibrate_record_noise_multiplier,
)
from fedpeft.privacy.clipping import clip_factor, clip_update
from fedpeft.privacy.compatibility import (
    DpStrategyRule,
    check_strategy_compatible,
)
from fedpeft.privacy.dpfedavg import (
    DpMeanStats,
    dp_mean,
    expected_clients,
    mean_from_noisy_sum,
    privatize_update,
)
from fedpeft.privacy.noise import (
    NoiseParams,
    add_noise,
    central_noise_std,
    distributed_noise_std,
    effective_noise_multiplier,
    gaussian_noise_like,
    secure_standard_normal,
    standard_normal,
)
from fedpeft.privacy.sampling import poisson_batches, poisson_subsample

__all__ = [
    "ACCOUNTANT_KINDS",
    "SAMPLINGS",
    "AccountantKind",
    "DpMeanStats",
    "DpStrategyRule",
    "NoiseParams",
    "PrivacyAccountant",
    "PrivacyBudget",
    "Sampling",
    "UnsupportedAccountingError",
    "add_noise",
    "calibrate_noise",
    "calibrate_noise_multiplier",
    "calibrate_record_noise_multiplier",
    "central_noise_std",
    "check_strategy_compatible",
    "client_level_event",
    "clip_factor",
    "clip_update",
    "distributed_noise_std",
    "dp_mean",
    "effective_noise_multiplier",
    "epsilon_after",
    "epsilon_for",
    "expected_clients",
    "gaussian_noise_like",
    "mean_from_noisy_sum",
    "neighboring_relation",
    "poisson_batches",
    "poisson_subsample",
    "privatize_update",
    "record_level_epsilon",
    "record_level_event",
    "secure_standard_normal",
    "standard_normal",
]
