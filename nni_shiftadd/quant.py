"""Fake quantisation: train and evaluate a model as if its Conv/Linear layers computed on ``b``-bit integers.

:func:`fake_quantize` makes the weights and the inputs of every ``nn.Conv1d``/``nn.Conv2d``/``nn.Linear`` (our
Adder* and Shift* layers subclass these) pass through symmetric per-tensor ``b``-bit quantisation:
``q = clamp(round(x / s), -(2^(b-1) - 1), 2^(b-1) - 1) * s`` (zero point 0), computed by
:func:`torch.fake_quantize_per_tensor_affine`, whose gradient is the straight-through estimator (identity inside
the clipping range, zero outside it).

- Weights: a :mod:`torch.nn.utils.parametrize` parametrisation of ``weight``; the scale comes from the tensor's own
  max-abs on every forward, so the float weight stays the trained parameter.
- Inputs: a forward pre-hook; the scale comes from a running max-abs of the layer's input (an exponential moving
  average updated in training, frozen in eval), kept in the buffer ``<layer>.input_quant.running_max`` so that it
  is saved in ``state_dict`` and checkpoints.

Operator rules:

- Add (AdderNet) layers compute ``X - W``: integer hardware can only subtract codes of one grid, so an adder's
  input and weight share one scale, from the larger of the two ranges.
- Shift (DeepShift) weights are left alone: they already are ``weight_bits``-bit sign-and-exponent codes (5 bits
  by default), i.e. exact powers of two; a uniform grid would turn most of them into values that are not powers of
  two (or zero), and quantising the latent float weight before the power-of-two rounding would change nothing the
  hardware sees. Their inputs are quantised like every other layer's.
- Layers without a ``weight`` tensor (Shift-PS, which stores exponent and sign) keep their weights, inputs quantised.
- Products of two activations (attention's ``Q K^T`` and ``A V``) are not layers and stay in floating point.

This is per-tensor max-abs scaling with round-to-nearest; :func:`nni_shiftadd.ops.round_fixed_point` is the other
activation quantiser of the package (DeepShift's fixed-point format with a power-of-two step, floor rounding).
"""
from __future__ import annotations

import fnmatch
from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from .ops.adder import AdderConv1d, AdderConv2d, AdderLinear
from .ops.shift import ShiftConv2d, ShiftLinear

__all__ = ["MAX_BITS", "MIN_BITS", "InputQuantizer", "WeightQuantizer", "check_bits", "fake_quantize",
           "fake_quantize_tensor", "quantized_layers"]

MIN_BITS, MAX_BITS = 2, 16
_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Linear)
_ADDER = (AdderConv1d, AdderConv2d, AdderLinear)
_SHIFT = (ShiftConv2d, ShiftLinear)


def check_bits(bits: Any) -> int:
    """``bits`` if it is an int in [MIN_BITS, MAX_BITS]; else ``ValueError`` naming the value."""
    if isinstance(bits, bool) or not isinstance(bits, int) or not MIN_BITS <= bits <= MAX_BITS:
        raise ValueError(f"bits: got {bits!r}; expected an int in [{MIN_BITS}, {MAX_BITS}]")
    return bits


def fake_quantize_tensor(x: Tensor, max_abs: Tensor, bits: int) -> Tensor:
    """``x`` on the symmetric ``bits``-bit grid of step ``max_abs / (2^(bits-1) - 1)``, values beyond ``max_abs``
    clipped; straight-through gradient to ``x`` (none to ``max_abs``)."""
    qmax = 2 ** (bits - 1) - 1
    scale = (max_abs.detach().float() / qmax).clamp_min(1e-12).reshape(())  # an all-zero tensor stays zero
    zero = torch.zeros((), dtype=torch.int32, device=x.device)
    return torch.fake_quantize_per_tensor_affine(x, scale.to(x.device), zero, -qmax, qmax)


class InputQuantizer(nn.Module):
    """The state of a layer's input quantiser: ``bits`` and the running max-abs of the inputs (a buffer).

    In training every batch updates ``running_max <- (1 - momentum) * running_max + momentum * max|x|`` (the first
    batch sets it) before quantising with it; in eval the stored value is used as it is.
    """

    def __init__(self, bits: int, momentum: float = 0.1) -> None:
        super().__init__()
        self.bits = check_bits(bits)
        if not 0 < momentum <= 1:
            raise ValueError(f"momentum: got {momentum!r}; expected a float in (0, 1]")
        self.momentum = momentum
        self.register_buffer("running_max", torch.zeros(()))

    @torch.no_grad()
    def observe(self, x: Tensor) -> None:
        """Fold ``max|x|`` into the running max-abs (training only)."""
        batch_max = x.detach().abs().amax().to(self.running_max)
        seen = bool(self.running_max > 0)
        self.running_max.copy_(torch.lerp(self.running_max, batch_max, self.momentum) if seen else batch_max)

    def extra_repr(self) -> str:
        return f"bits={self.bits}, momentum={self.momentum}"


class WeightQuantizer(nn.Module):
    """Parametrisation of a layer's ``weight``: the weight on the ``bits``-bit grid of its own max-abs, or, for an
    adder (``shared`` given), of the larger of its max-abs and the input's running max-abs."""

    def __init__(self, bits: int, shared: InputQuantizer | None = None) -> None:
        super().__init__()
        self.bits = check_bits(bits)
        # held in a tuple, not as a submodule: the buffer is saved once, under the layer's ``input_quant``
        self._shared = (shared,) if shared is not None else ()

    def max_abs(self, w: Tensor) -> Tensor:
        """The clipping range of ``w``'s grid."""
        amax = w.detach().abs().amax()
        return torch.maximum(amax, self._shared[0].running_max.to(amax)) if self._shared else amax

    def forward(self, w: Tensor) -> Tensor:
        return fake_quantize_tensor(w, self.max_abs(w), self.bits)

    def extra_repr(self) -> str:
        return f"bits={self.bits}, shared_with_input={bool(self._shared)}"


def _quantize_input(module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
    """Forward pre-hook: the first argument on the input grid of ``module.input_quant``."""
    x, *rest = args
    quant: InputQuantizer = module.input_quant
    if module.training:
        quant.observe(x)
    max_abs = quant.running_max
    if isinstance(module, _ADDER) and parametrize.is_parametrized(module, "weight"):
        max_abs = module.parametrizations.weight[0].max_abs(module.parametrizations.weight.original)
    return (fake_quantize_tensor(x, max_abs, quant.bits), *rest)


def quantized_layers(model: nn.Module) -> dict[str, nn.Module]:
    """The layers of ``model`` that :func:`fake_quantize` has prepared, by qualified name."""
    return {name: m for name, m in model.named_modules() if isinstance(getattr(m, "input_quant", None),
                                                                       InputQuantizer)}


def fake_quantize(model: nn.Module, bits: int = 8, *, exclude: Iterable[str] = (),
                  momentum: float = 0.1) -> nn.Module:
    """Make ``model``'s Conv/Linear layers (Adder/Shift included) compute on ``bits``-bit weights and inputs, in
    place; returns ``model``.

    Args:
        bits: word width, in [2, 16].
        exclude: ``fnmatch`` patterns of qualified layer names to keep in floating point (e.g. ``"stem.*"``,
            ``"head"``).
        momentum: of the running max-abs of the inputs.

    A model is prepared once: a layer that already has quantisers raises ``ValueError``. The prepared model's
    ``state_dict`` names the float weights ``<layer>.parametrizations.weight.original`` and holds
    ``<layer>.input_quant.running_max``; load it into a model prepared the same way. Shift weights are not
    re-quantised (they are powers of two already; see the module docstring).
    """
    check_bits(bits)
    patterns = [exclude] if isinstance(exclude, str) else list(exclude)
    for name, module in list(model.named_modules()):
        if not isinstance(module, _LAYERS) or any(fnmatch.fnmatchcase(name, p) for p in patterns):
            continue
        if hasattr(module, "input_quant") or parametrize.is_parametrized(module):
            raise ValueError(f"layer {name!r}: already fake-quantised (or parametrised); prepare a model once")
        module.input_quant = InputQuantizer(bits, momentum)
        weight = getattr(module, "weight", None)
        if isinstance(weight, nn.Parameter) and not isinstance(module, _SHIFT):
            shared = module.input_quant if isinstance(module, _ADDER) else None
            parametrize.register_parametrization(module, "weight", WeightQuantizer(bits, shared))
        module.register_forward_pre_hook(_quantize_input)
    return model
