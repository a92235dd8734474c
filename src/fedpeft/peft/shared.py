"""Per-adapter views of the shared frozen backbone.

Methods that change layers inside the backbone (LoRA, IA3, BitFit) must not
touch the backbone every other adapter shares. :func:`shared_copy` gives them
their own module tree whose frozen tensors *are* the backbone's (no memory is
copied); only the tensors a method trains are cloned.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import TypeVar

from torch import nn

M = TypeVar("M", bound=nn.Module)


def shared_copy(
    module: M, clone: Callable[[str, nn.Parameter], bool] = lambda n, p: False
) -> M:
    """A new module tree over the same tensors as ``module``.

    Args:
        module: The frozen backbone (or its body).
        clone: ``(name, parameter) -> bool``; selected parameters are copied
            and made trainable, all others are shared and stay frozen.

    Returns:
        A copy whose unselected parameters and all buffers are the originals.
    """
    memo: dict[int, object] = {}
    for name, param in module.named_parameters():
        if not clone(name, param):
            memo[id(param)] = param
    for buffer in module.buffers():
        memo[id(buffer)] = buffer
    twin = copy.deepcopy(module, memo)
    for name, param in twin.named_parameters():
        param.requires_grad_(clone(name, param))
    return twin
