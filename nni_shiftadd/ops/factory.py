"""The one factory of a block type's layer (as timm's ``create_conv2d`` chooses a convolution): the layer classes
and the functional convolution of each operator kind (:data:`~nni_shiftadd.vocabulary.OPERATORS`), looked up through
the block type's declaration, so that the ResNets, ``convert_model``, the hybrid bottlenecks and their exports all
build a Conv, Shift or Add layer the same way and no caller chooses by name.
"""
from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping
from typing import Any, Literal

import torch.nn.functional as F
from torch import Tensor, nn

from ..vocabulary import block_type
from .adder import AdderConv1d, AdderConv2d, AdderLinear, adder_conv1d, adder_conv2d, adder_linear
from .shift import ShiftConv2d, ShiftLinear, shift_conv1d, shift_linear

__all__ = ["FUNCTIONAL", "LAYERS", "Form", "block_conv2d", "block_function", "create_layer", "layer_class"]

Form = Literal["conv2d", "conv1d", "linear"]

#: The layer class of each operator kind, per layer form (a form missing for an operator has no such layer).
LAYERS: dict[str, dict[str, type[nn.Module]]] = {
    "multiply": {"conv2d": nn.Conv2d, "conv1d": nn.Conv1d, "linear": nn.Linear},
    "bitshift": {"conv2d": ShiftConv2d, "linear": ShiftLinear},
    "absdiff": {"conv2d": AdderConv2d, "conv1d": AdderConv1d, "linear": AdderLinear},
}


def layer_class(block: str, form: Form) -> type[nn.Module] | None:
    """The class that runs ``block``'s operator as a ``form`` layer, or ``None`` when there is none (e.g. a Shift
    ``conv1d``); ``ValueError`` for an undeclared block type."""
    return LAYERS[block_type(block).operator].get(form)


def create_layer(block: str, form: Form, *args: Any, options: Mapping[str, Any] | None = None,
                 **kwargs: Any) -> nn.Module:
    """A ``form`` layer of ``block`` (``create_layer("add", "conv2d", 16, 32, 3, padding=1, bias=False)``): the
    class of its operator, given ``args`` and ``kwargs``, with the block type's defaults (Add's ``eta``, Shift's
    ``weight_bits``) and then ``options`` on top, both only where the class takes them: operator options such as
    ``variant="PS"`` or ``eta=0.1`` meant for the Shift and Add layers of a network leave its Conv layers alone."""
    cls = layer_class(block, form)
    if cls is None:
        raise ValueError(f"{block}: no {form} layer for operator {block_type(block).operator!r}; "
                         f"forms: {list(LAYERS[block_type(block).operator])}")
    takes = inspect.signature(cls).parameters
    chosen = {k: v for k, v in {**block_type(block).defaults, **(options or {})}.items() if k in takes}
    return cls(*args, **{**chosen, **kwargs})


#: The functional form of each operator kind, per layer form: what a layer reading a shared weight pool runs. A
#: Shift reads power-of-two weights from its pool; in the translation space it runs them under names of its own
#: (``shift_linear``, ``shift_conv1d``), which the cost tracer counts as shifts.
FUNCTIONAL: dict[str, dict[str, Callable[..., Tensor]]] = {
    "multiply": {"conv2d": F.conv2d, "conv1d": F.conv1d, "linear": F.linear},
    "bitshift": {"conv2d": F.conv2d, "conv1d": shift_conv1d, "linear": shift_linear},
    "absdiff": {"conv2d": adder_conv2d, "conv1d": adder_conv1d, "linear": adder_linear},
}


def block_function(block: str, form: Form, eta: float | None = None) -> Callable[..., Tensor]:
    """``block``'s functional ``form`` (``fn(x, weight, ...)``, with a weight the block has already read from its
    pool: Shift's rounded to powers of two, Add's through ``T``), with AdderNet's adaptive learning-rate ``eta``
    bound where the operator takes one."""
    fn = FUNCTIONAL[block_type(block).operator][form]
    return functools.partial(fn, eta=eta) if _takes(fn, "eta") else fn


@functools.cache
def _takes(fn: Callable[..., Any], name: str) -> bool:
    """Whether ``fn`` has a parameter ``name`` (torch's builtins, which have no Python signature, have none of
    ours)."""
    try:
        return name in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


def block_conv2d(block: str, x: Tensor, weight: Tensor, *, stride: int = 1, padding: int = 0,
                 eta: float | None = None) -> Tensor:
    """``block``'s convolution of ``x`` with a weight it has read from its pool (:func:`block_function`)."""
    return block_function(block, "conv2d", eta)(x, weight, stride=stride, padding=padding)
