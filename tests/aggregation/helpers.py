"""Shared pieces of the warm-start tests."""

from __future__ import annotations

import dataclasses

from fedpeft.engine.simulation import FederatedRun
from fedpeft.experiment import Experiment


def warm_start_run(exp: Experiment, head_init: str, **privacy: object) -> FederatedRun:
    """A federated run of ``exp`` with warm start ``head_init`` and the
    privacy settings ``privacy`` (e.g. ``secagg=True``)."""
    cfg = exp.config.model_copy(
        update={
            "peft": exp.config.peft.model_copy(update={"head_init": head_init}),
            "privacy": exp.config.privacy.model_copy(update=privacy),
        }
    )
    return FederatedRun(dataclasses.replace(exp, config=cfg))
