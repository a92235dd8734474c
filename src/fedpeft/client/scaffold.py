"""SCAFFOLD's client side (Karimireddy et al. 2020, "SCAFFOLD: Stochastic
Controlled Averaging for Federated Learning", Alg. 1).

Client k steps with the corrected gradient ``g + c − c_k`` (``c`` the server's
control variate, ``c_k`` its own), so that every client drifts along the
federation's average direction instead of its own. The server sends the
correction ``c − c_k`` in the payload under :data:`CONTROL` keys (it keeps the
``c_k`` of the simulated clients: :mod:`fedpeft.server.scaffold`), and the
client returns its new control variate under the same keys: the mean of the
raw mini-batch gradients it took (option I of the paper, evaluated along the
local trajectory). Option II, ``c − (x − y_k)/(Kη)``, assumes SGD; these clients
step with AdamW, whose steps are not gradients times η.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

from fedpeft.types import Params

CONTROL = "scaffold/"
"""Key prefix of control-variate tensors in a payload or a reply."""


def split_control(payload: Mapping[str, np.ndarray]) -> tuple[Params, Params]:
    """(model state, correction ``c − c_k``) of a payload; the second is empty
    when the server does not run SCAFFOLD."""
    state = {k: np.asarray(v) for k, v in payload.items() if not k.startswith(CONTROL)}
    control = {
        k[len(CONTROL) :]: np.asarray(v)
        for k, v in payload.items()
        if k.startswith(CONTROL)
    }
    return state, control


def with_control(delta: Params, control: Mapping[str, np.ndarray]) -> Params:
    """A reply's arrays: ΔP plus the new control variate under :data:`CONTROL`."""
    return {
        **delta,
        **{CONTROL + k: np.asarray(v, np.float32) for k, v in control.items()},
    }


class GradientMean:
    """Running mean of the raw gradients a client (or, stacked, each client of
    a batched step) took, for its new control variate."""

    def __init__(self) -> None:
        self.total: dict[str, torch.Tensor] = {}
        self.steps: torch.Tensor | int = 0

    def add(
        self, grads: Mapping[str, torch.Tensor], active: torch.Tensor | None = None
    ) -> None:
        """Add one step's gradients (``active``: which clients of a stacked
        ``(K, ...)`` step took it)."""
        for name, g in grads.items():
            g = g.detach()
            if active is not None:
                g = g * active.view((-1,) + (1,) * (g.ndim - 1)).to(g.dtype)
            have = self.total.get(name)
            self.total[name] = g.clone() if have is None else have + g
        self.steps = self.steps + (active.double() if active is not None else 1)

    def mean(
        self, names: list[str], like: Mapping[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """The mean gradient of every tensor in ``names`` (zero for a tensor
        that never got one, e.g. off the loss's path)."""
        out = {}
        for name in names:
            total = self.total.get(name, torch.zeros_like(like[name]))
            steps = self.steps
            if isinstance(steps, torch.Tensor):
                shape = (-1,) + (1,) * (total.ndim - 1)
                out[name] = total / steps.clamp(min=1).to(total.dtype).view(shape)
            else:
                out[name] = total / max(steps, 1)
        return out
