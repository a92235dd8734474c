"""Adapter options of common PEFT methods at a given size, and menus of them.

Each builder counts the trainable weights of one method on a backbone of the
given :class:`~fedpeft.devices.cost.BackboneDims`, plus ``head_params`` for a
classifier head trained alongside. :func:`build_menu` makes an ordered menu,
smallest size first, for :func:`~fedpeft.devices.allocation.allocate`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from fedpeft.devices.cost import AdapterOption, BackboneDims


def lora_option(
    dims: BackboneDims,
    rank: int,
    *,
    matrices_per_layer: int = 2,
    layers: int = 0,
    head_params: int = 0,
) -> AdapterOption:
    """LoRA (Hu et al. 2021, arXiv:2106.09685) of ``rank`` on ``h x h`` matrices.

    Each adapted matrix gets ``A`` (``h x r``) and ``B`` (``r x h``), so
    ``2 h r`` weights; the default adapts query and value in every layer.
    ``layers=k`` adapts only the top k layers, so gradients stop below them
    (``backprop_depth=k``): on a small backbone that, not the rank, is what
    cuts a client's compute and activation memory.
    """
    if not 0 <= layers <= dims.num_layers:
        raise ValueError(f"layers must be 0 (all) .. {dims.num_layers}, got {layers}")
    depth = layers or dims.num_layers
    per_layer = matrices_per_layer * 2 * dims.hidden * rank
    return AdapterOption(
        "lora",
        rank,
        depth * per_layer + head_params,
        backprop_depth=layers or None,
    )


def prompt_option(
    dims: BackboneDims, length: int, *, head_params: int = 0
) -> AdapterOption:
    """Soft prompt (Lester et al. 2021, arXiv:2104.08691) of ``length`` tokens."""
    return AdapterOption(
        "prompt", length, length * dims.hidden + head_params, extra_tokens=length
    )


def prefix_option(
    dims: BackboneDims, length: int, *, head_params: int = 0
) -> AdapterOption:
    """Prefix tuning (Li & Liang 2021, arXiv:2101.00190): key and value per layer."""
    trainable = 2 * dims.num_layers * length * dims.hidden + head_params
    return AdapterOption("prefix", length, trainable, extra_tokens=length)


def top_layers_option(
    dims: BackboneDims, layers: int, *, head_params: int = 0
) -> AdapterOption:
    """Fine-tune the top ``layers`` blocks; gradients stop below them."""
    trainable = round(layers * dims.layer_params) + head_params
    return AdapterOption("top-layers", layers, trainable, backprop_depth=layers)


OptionBuilder = Callable[..., AdapterOption]

BUILDERS: Mapping[str, OptionBuilder] = {
    "lora": lora_option,
    "prompt": prompt_option,
    "prefix": prefix_option,
    "top-layers": top_layers_option,
}
"""Method name to option builder ``(dims, size, *, head_params) -> option``."""


def build_menu(
    dims: BackboneDims, method: str, sizes: Iterable[int], *, head_params: int = 0
) -> tuple[AdapterOption, ...]:
    """Options of one method at each size, sorted smallest first.

    Raises:
        ValueError: Unknown ``method`` or no sizes.
    """
    if method not in BUILDERS:
        raise ValueError(
            f"method={method!r} has no builder; use one of {list(BUILDERS)}"
        )
    ordered = sorted(set(sizes))
    if not ordered:
        raise ValueError("sizes is empty; give at least one adapter size")
    build = BUILDERS[method]
    return tuple(build(dims, size, head_params=head_params) for size in ordered)
