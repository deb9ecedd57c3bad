"""Fake quantisation: train and evaluate a model as if its products computed on ``b``-bit integers.

:func:`fake_quantize` makes the weights and the inputs of every ``nn.Conv1d``/``nn.Conv2d``/``nn.Linear`` (our
Adder* and Shift* layers subclass these) pass through per-tensor ``b``-bit quantisation, symmetric unless said
otherwise below: ``q = clamp(round(x / s), -(2^(b-1) - 1), 2^(b-1) - 1) * s`` (zero point 0), computed by
:func:`torch.fake_quantize_per_tensor_affine`, whose gradient is the straight-through estimator (identity inside
the clipping range, zero outside it).

- Weights: a :mod:`torch.nn.utils.parametrize` parametrisation of ``weight``; the scale comes from the tensor's own
  max-abs on every forward, so the float weight stays the trained parameter. An ``nn.Embedding``'s table is
  quantised the same way (its input is token indices).
- Inputs: a forward pre-hook; the scale comes from a running max-abs of the layer's input (an exponential moving
  average updated in training, frozen in eval), kept in the buffer ``<layer>.input_quant.running_max`` so that it
  is saved in ``state_dict`` and checkpoints.
- Functional calls: a module that runs Conv/Linear products on tensors it computes (the translation space's
  lightweight branch reads its weights from shared pools; the tied output projection reads the embedding table)
  names its call sites in ``quant_sites`` and passes each call's operands through :func:`quantize_operands`;
  :func:`fake_quantize` gives it one :class:`OperandQuantizer` per site (``<module>.operand_quant.<site>``), whose
  adder grids keep a zero point (see there). The translation space's attention names its two products of
  activations (``Q K^T``, ``A V``) so, and runs them unfused when they are quantised.

Operator rules (each operator's ``weight_grid`` in :data:`~nni_shiftadd.vocabulary.OPERATORS`):

- Add (AdderNet) layers compute ``X - W``: integer hardware can only subtract codes of one grid, so an adder's
  input and weight share one scale, from the larger of the two ranges (``input``).
- Shift (DeepShift) weights are left alone (``exact``): they already are ``weight_bits``-bit sign-and-exponent
  codes (5 bits by default), i.e. exact powers of two; a uniform grid would turn most of them into values that are
  not powers of two (or zero), and quantising the latent float weight before the power-of-two rounding would change
  nothing the hardware sees. Their inputs are quantised like every other layer's.
- Layers without a ``weight`` tensor (Shift-PS, which stores exponent and sign) keep their weights, inputs quantised.
- Products of two activations are quantised only where a module names them as call sites (the translation
  space's attention does; :class:`~nni_shiftadd.nn.attention.AttnBlock` of the image spaces does not).

This is per-tensor max-abs scaling with round-to-nearest; :func:`nni_shiftadd.ops.round_fixed_point` is the other
activation quantiser of the package (DeepShift's fixed-point format with a power-of-two step, floor rounding).
"""
from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from .ops.factory import LAYERS
from .vocabulary import OPERATORS

__all__ = ["MAX_BITS", "MIN_BITS", "InputQuantizer", "OperandQuantizer", "WeightQuantizer", "check_bits",
           "cost_bits", "fake_quantize", "fake_quantize_range", "fake_quantize_tensor", "float_state_to_quantized",
           "operands_quantized", "quantize_operands", "quantized_layers"]

MIN_BITS, MAX_BITS = 2, 16
_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Linear)
#: The layer classes of the operators with a weight rule of their own (the multiply layers are their bases).
_SPECIAL = [(cls, name) for name, forms in LAYERS.items() if OPERATORS[name].weight_grid != "own"
            for cls in forms.values()]


def _weight_grid(layer: nn.Module) -> str:
    """The ``weight_grid`` of the operator ``layer`` runs."""
    return next((OPERATORS[name].weight_grid for cls, name in _SPECIAL if isinstance(layer, cls)), "own")


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


def _check_momentum(momentum: Any) -> float:
    """``momentum`` if it is in (0, 1]; else ``ValueError`` naming the value."""
    if not 0 < momentum <= 1:
        raise ValueError(f"momentum: got {momentum!r}; expected a float in (0, 1]")
    return momentum


class InputQuantizer(nn.Module):
    """The state of a layer's input quantiser: ``bits`` and the running max-abs of the inputs (a buffer).

    In training every batch updates ``running_max <- (1 - momentum) * running_max + momentum * max|x|`` (the first
    batch sets it) before quantising with it; in eval the stored value is used as it is.
    """

    def __init__(self, bits: int, momentum: float = 0.1) -> None:
        super().__init__()
        self.bits, self.momentum = check_bits(bits), _check_momentum(momentum)
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

    @property
    def shares_input(self) -> bool:
        """Whether the weight's grid is the input's (an adder's)."""
        return bool(self._shared)

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
    weights = module.parametrizations.weight if parametrize.is_parametrized(module, "weight") else None
    if weights is not None and weights[0].shares_input:  # decided once, when fake_quantize prepared the layer
        max_abs = weights[0].max_abs(weights.original)
    return (fake_quantize_tensor(x, max_abs, quant.bits), *rest)


def fake_quantize_range(x: Tensor, low: Tensor, step: Tensor, bits: int) -> Tensor:
    """``x`` on the unsigned ``bits``-bit grid ``low' + k * step`` (``low'`` is ``low`` rounded to the grid through an
    integer zero point), values beyond it clipped; straight-through gradient to ``x``."""
    qmax = 2 ** bits - 1
    step = step.detach().float().clamp_min(1e-12).reshape(()).to(x.device)
    # in float64, clamped inside int32: a collapsed range (step at its floor) must not wrap round to the other sign
    zero = torch.round(-low.detach().double() / step.double()).clamp(-2 ** 30, 2 ** 30).to(torch.int32).reshape(())
    return torch.fake_quantize_per_tensor_affine(x, step, zero.to(x.device), 0, qmax)


class OperandQuantizer(nn.Module):
    """The quantisers of one functional call site ``x (*) w``: ``x`` on a grid of its running range (buffers
    ``running_min``, ``running_max``: an exponential moving average updated in training, frozen in eval, as
    :class:`InputQuantizer`), ``w`` by its operator's ``weight_grid`` (a weight, or the second activation of a
    product of two, whose range is taken afresh every call).

    A multiply's operands are on symmetric grids of their own max-abs. An adder's input and weight share one step
    (integer hardware subtracts codes of one step) but each keeps its own offset, an integer zero point that the
    hardware folds into one constant: an adder's input is ``-sum |x - w|`` of the layer before, all of one sign and
    far from zero, on which a symmetric grid spends most of its codes on values that never occur.
    """

    def __init__(self, bits: int, momentum: float = 0.1) -> None:
        super().__init__()
        self.bits, self.momentum = check_bits(bits), _check_momentum(momentum)
        self.register_buffer("running_min", torch.zeros(()))
        self.register_buffer("running_max", torch.zeros(()))
        self.register_buffer("observed", torch.zeros(()))  # 1 once a batch was seen (a float: checkpoint averaging)

    @torch.no_grad()
    def observe(self, x: Tensor) -> None:
        """Fold the batch's ``min(x)`` and ``max(x)`` into the running range (training only; no host sync)."""
        lo, hi = (v.to(self.running_min) for v in torch.aminmax(x.detach()))
        seen = self.observed > 0
        self.running_min.copy_(torch.where(seen, torch.lerp(self.running_min, lo, self.momentum), lo))
        self.running_max.copy_(torch.where(seen, torch.lerp(self.running_max, hi, self.momentum), hi))
        self.observed.fill_(1.0)

    def forward(self, x: Tensor, w: Tensor | None = None, operator: str = "multiply"
                ) -> tuple[Tensor, Tensor | None]:
        """``(x, w)`` on their grids for a product of ``operator`` (a key of ``OPERATORS``); ``w`` ``None``: only
        ``x`` (the other operand is on a grid already)."""
        if self.training:
            self.observe(x)
        grid, bits = OPERATORS[operator].weight_grid, self.bits
        lo, hi = self.running_min.to(x), self.running_max.to(x)
        if w is not None and grid == "input":
            w_lo, w_hi = torch.aminmax(w.detach())
            step = torch.maximum(hi - lo, w_hi - w_lo) / (2 ** bits - 1)
            return fake_quantize_range(x, lo, step, bits), fake_quantize_range(w, w_lo, step, bits)
        if w is not None and grid == "own":
            w = fake_quantize_tensor(w, w.detach().abs().amax(), bits)
        return fake_quantize_tensor(x, torch.maximum(lo.abs(), hi.abs()), bits), w

    def extra_repr(self) -> str:
        return f"bits={self.bits}, momentum={self.momentum}"


def quantize_operands(module: nn.Module, site: str, x: Tensor, w: Tensor | None = None, operator: str = "multiply"
                      ) -> tuple[Tensor, Tensor | None]:
    """The operands of ``module``'s call ``site`` on their ``b``-bit grids when :func:`fake_quantize` prepared
    ``module``, else as they are (see :class:`OperandQuantizer`). ``site`` must be one of ``module.quant_sites``."""
    sites = module._modules.get("operand_quant")
    return (x, w) if sites is None else sites[site](x, w, operator)


def operands_quantized(module: nn.Module) -> bool:
    """Whether :func:`fake_quantize` prepared ``module``'s call sites."""
    return "operand_quant" in module._modules


def quantized_layers(model: nn.Module) -> dict[str, nn.Module]:
    """The layers, embedding tables and call sites of ``model`` that :func:`fake_quantize` has prepared, by
    qualified name (a call site as ``<module>.operand_quant.<site>``)."""
    return {name: m for name, m in model.named_modules()
            if isinstance(getattr(m, "input_quant", None), InputQuantizer) or isinstance(m, OperandQuantizer)
            or (isinstance(m, nn.Embedding) and parametrize.is_parametrized(m, "weight"))}


def fake_quantize(model: nn.Module, bits: int = 8, *, exclude: Iterable[str] = (),
                  momentum: float = 0.1) -> nn.Module:
    """Make ``model``'s Conv/Linear layers (Adder/Shift included), embedding tables and functional call sites
    (``quant_sites``) compute on ``bits``-bit weights and inputs, in place; returns ``model``.

    Args:
        bits: word width, in [2, 16].
        exclude: ``fnmatch`` patterns of qualified module names to keep in floating point (e.g. ``"stem.*"``,
            ``"head"``).
        momentum: of the running ranges of the inputs (max-abs; min and max at call sites).

    A model is prepared once: a module that already has quantisers raises ``ValueError``. The prepared model's
    ``state_dict`` names the float weights ``<layer>.parametrizations.weight.original`` and holds
    ``<layer>.input_quant.running_max`` (``<module>.operand_quant.<site>.running_min`` etc.); load it into a model
    prepared the same way, or a float model's state through :func:`float_state_to_quantized`. Shift weights are
    not re-quantised (they are powers of two already; see the module docstring).
    """
    check_bits(bits)
    patterns = [exclude] if isinstance(exclude, str) else list(exclude)
    for name, module in list(model.named_modules()):
        if any(fnmatch.fnmatchcase(name, p) for p in patterns):
            continue
        sites = getattr(module, "quant_sites", ())
        if not isinstance(module, (*_LAYERS, nn.Embedding)) and not sites:
            continue
        if hasattr(module, "input_quant") or hasattr(module, "operand_quant") or parametrize.is_parametrized(module):
            raise ValueError(f"layer {name!r}: already fake-quantised (or parametrised); prepare a model once")
        if sites:
            module.operand_quant = nn.ModuleDict({site: OperandQuantizer(bits, momentum) for site in sites})
        if isinstance(module, nn.Embedding):
            parametrize.register_parametrization(module, "weight", WeightQuantizer(bits))
        elif isinstance(module, _LAYERS):
            module.input_quant = InputQuantizer(bits, momentum)
            weight, grid = getattr(module, "weight", None), _weight_grid(module)
            if isinstance(weight, nn.Parameter) and grid != "exact":
                shared = module.input_quant if grid == "input" else None
                parametrize.register_parametrization(module, "weight", WeightQuantizer(bits, shared))
            module.register_forward_pre_hook(_quantize_input)
    return model


def float_state_to_quantized(model: nn.Module, state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """A float network's ``state`` under the names of ``model``, its fake-quantised twin: parametrised weights
    under ``...parametrizations.weight.original``, and the quantisers' running ranges that ``state`` lacks at 0
    (not yet observed: the first training batch sets them). Quantisation-aware fine-tuning starts from it; a name
    ``model`` does not have is left for ``load_state_dict`` to refuse."""
    out, reference = dict(state), model.state_dict()
    ranges = ("running_min", "running_max", "observed")
    is_float = not any("parametrizations." in name or (name.rsplit(".", 1)[-1] in ranges and "quant" in name)
                       for name in state)
    for name in reference:
        if name in out:
            continue
        float_name = re.sub(r"(^|\.)parametrizations\.weight\.original$", r"\1weight", name)
        if float_name != name and float_name in out:
            out[name] = out.pop(float_name)
        elif is_float and name.rsplit(".", 1)[-1] in ranges:  # a quantised state lacking one is refused on load
            out[name] = torch.zeros_like(reference[name])
    return out


def cost_bits(quant_bits: int | None) -> int:
    """The accelerator word width that holds ``quant_bits``-bit values: 8, 16, or 32 for floating point (the cost
    model's widths)."""
    if quant_bits is None:
        return 32
    return 8 if quant_bits <= 8 else 16
