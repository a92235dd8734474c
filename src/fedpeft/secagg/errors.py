"""Exceptions raised by the secure-aggregation protocol."""

from __future__ import annotations


class SecAggError(RuntimeError):
    """Base class: the protocol round cannot go on and yields no result."""


class InsufficientSurvivorsError(SecAggError):
    """Too few clients are left in some neighbourhood to reach the threshold t.

    Raised instead of any partial result (Bonawitz et al. 2017, §4: the server
    aborts when fewer than t users remain). The message names the client whose
    neighbourhood fell short, t and how many neighbours were left.
    """


class ProtocolError(SecAggError):
    """A message is out of order, misrouted, malformed or fails authentication."""
