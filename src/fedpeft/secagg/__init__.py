"""Secure aggregation (Bonawitz et al. 2017; SecAgg+, Bell et al. 2020).

Math: :mod:`~fedpeft.secagg.quantize`, :mod:`~fedpeft.secagg.shamir`,
:mod:`~fedpeft.secagg.prg`, :mod:`~fedpeft.secagg.graph`. Protocol:
:mod:`~fedpeft.secagg.protocol` (states + stage functions). In-process round:
:func:`secure_sum`.
"""

from fedpeft.secagg.config import SecAggConfig
from fedpeft.secagg.errors import (
    InsufficientSurvivorsError,
    ProtocolError,
    SecAggError,
)
from fedpeft.secagg.inprocess import SecAggStats, secure_sum
from fedpeft.secagg.server import SecAggResult

__all__ = [
    "InsufficientSurvivorsError",
    "ProtocolError",
    "SecAggConfig",
    "SecAggError",
    "SecAggResult",
    "SecAggStats",
    "secure_sum",
]
