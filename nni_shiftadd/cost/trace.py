"""Find the compute layers of a model by running one real forward pass and watching it.

Two observers run together during the pass:

- forward hooks on every ``nn.Conv1d``/``nn.Conv2d``/``nn.Linear`` (our Adder*/Shift* layers and timm's thin
  subclasses included) record one layer per call, shaped from the tensors that actually went in and out;
- a :class:`torch.overrides.TorchFunctionMode` records the products that happen *outside* those modules:
  activation-by-activation matmuls (``torch.matmul``, ``@``, ``bmm``, ``mm``, ``baddbmm``, ``addmm``,
  2-operand ``einsum``), ``F.scaled_dot_product_attention`` (two matmuls, ``Q K^T`` and ``A V``), and
  ``F.linear``/``F.conv1d``/``F.conv2d`` called functionally (``nn.MultiheadAttention`` works this way:
  its ``out_proj`` module is never called, its weights go through ``F.linear``), and their Add and Shift twins
  (``adder_linear``/``adder_conv1d``, ``shift_linear``/``shift_conv1d``: the SuperTransformer's lightweight
  branch), counted as additions and shifts.

Anything that might hide multiply-accumulates and is not understood is *unmodelled*: a leaf module with
parameters of an unknown type (unless its forward issued calls that were recorded) or a product function
we cannot shape (``tensordot``, a 3-operand ``einsum``, ...). By default these raise ``ValueError``;
``unmodelled="report"`` lists them in :attr:`Trace.unmodelled` instead. The cost is never silently zero.

Naming: a module record is named by its module path (``layer1.0.conv1``; a module called again gets
``#1``, ``#2``, ...); a functional record by the innermost running module's path plus ``.<fn>#<i>``, e.g.
``blocks.0.attn.matmul#0``, ``blocks.0.attn.sdpa#0.qk``.
"""
from __future__ import annotations

import sys

import dataclasses
import math
import re
import types
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from ..ops.adder import AdderConv1d, AdderConv2d, AdderLinear, adder_conv1d, adder_linear
from ..ops.shift import ShiftConv2d, ShiftLinear, shift_conv1d, shift_linear
from .layers import LayerRecord, LayerShape, Op

__all__ = ["Trace", "register_zero_cost_type", "trace_layers"]

_ADDER = (AdderConv1d, AdderConv2d, AdderLinear)
_SHIFT = (ShiftConv2d, ShiftLinear)
_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Linear)  # the hybrid layers subclass these

# Parametrised layers that do no multiply-accumulates worth counting (normalisation, lookups, per-channel
# scales). Any class whose name ends in Norm/Norm1d/Norm2d/Norm3d or LayerScale/LayerScale2d counts too.
_ZERO_COST: list[type] = [nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm, nn.Embedding,
                          nn.EmbeddingBag, nn.PReLU]
_ZERO_COST_NAME = re.compile(r"(Norm(?:[123]d)?|LayerScale(?:2d)?)$")


def register_zero_cost_type(*module_types: type) -> None:
    """Declare parametrised module types that do no multiply-accumulates (e.g. a learnable bias)."""
    for t in module_types:
        if not isinstance(t, type) or not issubclass(t, nn.Module):
            raise TypeError(f"module_types: expected nn.Module subclasses, got {t!r}")
        if t not in _ZERO_COST:
            _ZERO_COST.append(t)


def _zero_cost(module: nn.Module) -> bool:
    return isinstance(module, tuple(_ZERO_COST)) or bool(_ZERO_COST_NAME.search(type(module).__name__))


@dataclasses.dataclass(frozen=True)
class Trace:
    """What :func:`trace_layers` found: the compute layers in execution order, and what it could not model.

    ``unmodelled`` holds ``(path, type)`` pairs (only ever non-empty with ``unmodelled="report"``): a module
    path and class name, or a functional call's name and the function with the reason it was not shaped.
    Iterating a ``Trace`` iterates ``layers``.
    """

    layers: list[LayerRecord]
    unmodelled: list[tuple[str, str]] = dataclasses.field(default_factory=list)

    @property
    def macs(self) -> int:
        return sum(r.shape.macs for r in self.layers)

    def __iter__(self) -> Iterator[LayerRecord]:
        return iter(self.layers)

    def __len__(self) -> int:
        return len(self.layers)


class _NotShaped(Exception):
    """A product function whose arguments we cannot map onto a layer shape."""


def _prod(xs: Sequence[int]) -> int:
    return math.prod(int(x) for x in xs)


def _op(module: nn.Module) -> Op:
    if isinstance(module, _ADDER):
        return "absdiff"
    if isinstance(module, _SHIFT):
        return "bitshift"
    return "multiply"


def _module_params(module: nn.Module) -> int:
    """Own parameter count; a Shift-PS weight is one weight stored as (shift, sign), so ``sign`` is not counted."""
    return sum(p.numel() for name, p in module.named_parameters(recurse=False)
               if not (isinstance(module, _SHIFT) and name == "sign"))


def _first_tensor(x: Any) -> Tensor:
    if isinstance(x, Tensor):
        return x
    if isinstance(x, (tuple, list)) and x and isinstance(x[0], Tensor):
        return x[0]
    raise TypeError(f"expected a tensor, got {type(x).__name__}")


def _conv_shape(kind_dims: int, x: Tensor, y: Tensor, weight_shape: Sequence[int], stride: Sequence[int] | int,
                groups: int, op: Op, weights_are_activations: bool = False) -> LayerShape:
    """A conv layer from its input ``x``, output ``y`` and weight shape ``[O, C/g, *kernel]`` (1-D convs: h = 1)."""
    if x.dim() == kind_dims + 1:  # unbatched input
        x, y = x.unsqueeze(0), y.unsqueeze(0)
    stride = (stride,) if isinstance(stride, int) else tuple(stride)
    kernel = [int(k) for k in weight_shape[2:]]
    if kind_dims == 1:
        h, w, e, f, r, s = 1, x.shape[-1], 1, y.shape[-1], 1, kernel[0]
    else:
        (h, w), (e, f), (r, s) = x.shape[-2:], y.shape[-2:], kernel
    return LayerShape(kind="conv", op=op, n=int(x.shape[0]), c=int(weight_shape[1]),
                      m=int(weight_shape[0]) // groups, h=int(h), w=int(w), r=int(r), s=int(s), e=int(e), f=int(f),
                      stride=int(stride[0]), groups=int(groups), weights_are_activations=weights_are_activations)


def _module_shape(module: nn.Module, x: Tensor, y: Tensor) -> LayerShape:
    op = _op(module)
    if isinstance(module, nn.Linear):
        return LayerShape(kind="fc", op=op, n=x.numel() // module.in_features, c=module.in_features,
                          m=module.out_features)
    dims = 1 if isinstance(module, nn.Conv1d) else 2
    g = module.groups
    weight_shape = (module.out_channels, module.in_channels // g, *module.kernel_size)
    return _conv_shape(dims, x, y, weight_shape, module.stride, g, op)


def _product(n: int, c: int, m: int, repeat: int, a_param: bool, b_param: bool, a_batched: bool,
             b_batched: bool, a_numel: int, b_numel: int) -> tuple[LayerShape, int]:
    """``repeat`` independent ``[n, c] @ [c, m]`` products; a shared parameter operand makes it a Linear layer."""
    if b_param and not a_param and not b_batched:  # x @ W: a Linear over repeat * n rows
        return LayerShape(kind="fc", op="multiply", n=repeat * n, c=c, m=m), b_numel
    if a_param and not b_param and not a_batched:  # W @ x = (x^T W^T)^T: a Linear over repeat * m rows
        return LayerShape(kind="fc", op="multiply", n=repeat * m, c=c, m=n), a_numel
    shape = LayerShape(kind="matmul", op="multiply", n=n, c=c, m=m, repeat=repeat, weights_are_activations=not b_param)
    return shape, (a_numel if a_param else 0) + (b_numel if b_param else 0)


class _Tracer:
    """State of one trace: the module path stack, the records, and what could not be modelled."""

    def __init__(self, model: nn.Module) -> None:
        self.names = {id(m): name for name, m in model.named_modules()}
        self.param_ids = {id(p) for p in model.parameters()}
        self.param_storages = set()
        for p in model.parameters():
            try:
                ptr = p.untyped_storage().data_ptr()
            except (RuntimeError, NotImplementedError):
                continue
            if ptr:  # meta tensors all report 0: they are matched through their view base instead
                self.param_storages.add(ptr)
        self.stack: list[tuple[str, nn.Module, int]] = []  # (path, module, functional records before it ran)
        self.depth = 0  # how many hooked layers are running (their internals are not traced)
        self.layers: list[LayerRecord] = []
        self.functional = 0
        self.unmodelled: list[tuple[str, str]] = []
        self.unmodelled_reasons: list[str] = []
        self.module_calls: Counter[str] = Counter()
        self.fn_calls: Counter[tuple[str, str]] = Counter()

    # -- modules -------------------------------------------------------------------------------------------
    def pre_hook(self, module: nn.Module, args: Any) -> None:
        path = self.names.get(id(module), type(module).__name__)
        self.stack.append((path, module, self.functional))
        if isinstance(module, _LAYERS):
            self.depth += 1

    def post_hook(self, module: nn.Module, args: Any, output: Any) -> None:
        path, _, functional_before = self.stack.pop()
        if isinstance(module, _LAYERS):
            self.depth -= 1
            if self.depth == 0 and output is not None:  # output is None when the forward raised
                k = self.module_calls[path]
                self.module_calls[path] += 1
                name = path if k == 0 else f"{path}#{k}"
                shape = self.role(_module_shape(module, _first_tensor(args), _first_tensor(output)), module)
                self.layers.append(LayerRecord(name, type(module).__name__, shape, _module_params(module)))
            return
        if self.depth or _zero_cost(module) or next(module.children(), None) is not None:
            return
        if next(module.parameters(recurse=False), None) is None:
            return
        if self.functional == functional_before:  # it issued no call that was recorded (or reported)
            self.unmodelled.append((path or "(root)", type(module).__name__))
            self.unmodelled_reasons.append(
                f"{path or '(root)'} ({type(module).__name__}): no cost model for this layer type")

    # -- functional calls ----------------------------------------------------------------------------------
    def is_param(self, t: Any) -> bool:
        """Whether ``t`` is a parameter of the model or a view of one (e.g. a chunk of MHA's in_proj_weight)."""
        if isinstance(t, nn.Parameter):
            return True
        if not isinstance(t, Tensor):
            return False
        base = t
        while base is not None:
            if id(base) in self.param_ids:
                return True
            base = base._base
        try:
            ptr = t.untyped_storage().data_ptr()
        except (RuntimeError, NotImplementedError):
            return False
        return bool(ptr) and ptr in self.param_storages

    def fn_name(self, fn: str) -> str:
        path = self.stack[-1][0] if self.stack else ""
        i = self.fn_calls[(path, fn)]
        self.fn_calls[(path, fn)] += 1
        return f"{path}.{fn}#{i}" if path else f"{fn}#{i}"

    def role(self, shape: LayerShape, module: nn.Module | None = None) -> LayerShape:
        """``shape`` marked ``lightweight`` when it runs inside a module whose ``cost_role`` is ``"lightweight"``
        (the SuperTransformer's lightweight branch): the Eyeriss op rules treat those layers apart."""
        modules = [m for _, m, _ in self.stack] + ([module] if module is not None else [])
        if any(getattr(m, "cost_role", None) == "lightweight" for m in modules):
            return dataclasses.replace(shape, lightweight=True)
        return shape

    def record(self, fn: str, shapes: list[tuple[str, LayerShape, int]]) -> None:
        name = self.fn_name(fn)
        for suffix, shape, params in shapes:
            self.layers.append(LayerRecord(name + suffix, fn, self.role(shape), params))
        self.functional += 1

    def not_shaped(self, fn: str, reason: str) -> None:
        name = self.fn_name(fn)
        self.unmodelled.append((name, f"{fn}: {reason}"))
        self.unmodelled_reasons.append(f"{name} ({fn}): {reason}")
        self.functional += 1  # the module that issued it is then not reported a second time


# -- shaping of the functional calls ---------------------------------------------------------------------------
def _arg(args: tuple, kwargs: dict, i: int, name: str, default: Any = None) -> Any:
    return args[i] if len(args) > i else kwargs.get(name, default)


def _matmul(t: _Tracer, a: Any, b: Any) -> list[tuple[str, LayerShape, int]]:
    if not isinstance(a, Tensor) or not isinstance(b, Tensor) or a.dim() == 0 or b.dim() == 0:
        raise _NotShaped("operands are not two tensors of rank >= 1")
    a_shape = [1, *a.shape] if a.dim() == 1 else list(a.shape)
    b_shape = [*b.shape, 1] if b.dim() == 1 else list(b.shape)
    batch = torch.broadcast_shapes(tuple(a_shape[:-2]), tuple(b_shape[:-2]))
    shape, params = _product(a_shape[-2], a_shape[-1], b_shape[-1], _prod(batch), t.is_param(a), t.is_param(b),
                             _prod(a_shape[:-2]) > 1, _prod(b_shape[:-2]) > 1, a.numel(), b.numel())
    return [("", shape, params)]


def _einsum(t: _Tracer, args: tuple, kwargs: dict) -> list[tuple[str, LayerShape, int]]:
    """2-operand einsums that are (batched) matrix products: every index is batch, contracted, left or right."""
    if not args or not isinstance(args[0], str):
        raise _NotShaped("only the string-equation form is modelled")
    operands = list(args[1:])
    if len(operands) == 1 and isinstance(operands[0], (list, tuple)):
        operands = list(operands[0])
    if len(operands) != 2 or not all(isinstance(o, Tensor) for o in operands):
        raise _NotShaped(f"{len(operands)} operands; only 2-operand matrix products are modelled")
    eq = args[0].replace(" ", "")
    lhs, arrow, out = eq.partition("->")
    terms = lhs.split(",")
    if len(terms) != 2:
        raise _NotShaped(f"equation {args[0]!r} does not have 2 operands")
    spare = iter(c for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZ" if c not in eq)
    n_ell = [o.dim() - (len(term) - 3) if "..." in term else 0 for term, o in zip(terms, operands)]
    ell = [next(spare) for _ in range(max(n_ell))]
    subs = [term.replace("...", "".join(ell[len(ell) - k:])) for term, k in zip(terms, n_ell)]
    if not arrow:  # implicit output: the ellipsis, then the indices seen once, alphabetically
        once = sorted(c for c in set("".join(subs)) if "".join(subs).count(c) == 1 and c not in ell)
        out = "".join(ell) + "".join(once)
    out = out.replace("...", "".join(ell))
    size: dict[str, int] = {}
    for sub, o in zip(subs, operands):
        if len(sub) != o.dim() or len(set(sub)) != len(sub):
            raise _NotShaped(f"equation {args[0]!r}: repeated index or rank mismatch")
        for ch, dim in zip(sub, o.shape):
            size[ch] = max(size.get(ch, 1), int(dim))
    a, b = set(subs[0]), set(subs[1])
    if (a ^ b) - set(out) or set(out) - (a | b):
        raise _NotShaped(f"equation {args[0]!r} sums an index of one operand alone or is malformed")
    batch = [ch for ch in a & b if ch in out]
    n = _prod([size[ch] for ch in a - b])
    c = _prod([size[ch] for ch in (a & b) - set(out)])
    m = _prod([size[ch] for ch in b - a])
    x, y = operands
    shape, params = _product(n, c, m, _prod([size[ch] for ch in batch]), t.is_param(x), t.is_param(y),
                             _prod([size[ch] for ch in batch if ch in a]) > 1,
                             _prod([size[ch] for ch in batch if ch in b]) > 1, x.numel(), y.numel())
    return [("", shape, params)]


def _sdpa(t: _Tracer, args: tuple, kwargs: dict) -> list[tuple[str, LayerShape, int]]:
    q, k, v = (_arg(args, kwargs, i, name) for i, name in enumerate(("query", "key", "value")))
    length, e, s, ev = q.shape[-2], q.shape[-1], k.shape[-2], v.shape[-1]
    repeat = _prod(q.shape[:-2])  # batch x heads (with grouped-query attention the query's heads count)
    return [(".qk", LayerShape(kind="matmul", op="multiply", n=length, c=e, m=s, repeat=repeat,
                               weights_are_activations=True), 0),
            (".av", LayerShape(kind="matmul", op="multiply", n=length, c=s, m=ev, repeat=repeat,
                               weights_are_activations=True), 0)]


def _linear(op: Op = "multiply", weight_operand: bool = False) -> Callable[[_Tracer, tuple, dict],
                                                                      list[tuple[str, LayerShape, int]]]:
    """``F.linear`` and its Add/Shift twins: a Linear layer when the weight is a parameter (or, for the twins, whose
    second operand is a weight by definition: Shift's is rounded on the fly), else an activation product."""
    def shape(t: _Tracer, args: tuple, kwargs: dict) -> list[tuple[str, LayerShape, int]]:
        x, w, b = _arg(args, kwargs, 0, "input"), _arg(args, kwargs, 1, "weight"), _arg(args, kwargs, 2, "bias")
        out_features, in_features = (1, w.shape[0]) if w.dim() == 1 else (w.shape[0], w.shape[1])
        rows = x.numel() // in_features
        if weight_operand or t.is_param(w):
            params = w.numel() + (b.numel() if isinstance(b, Tensor) and t.is_param(b) else 0)
            return [("", LayerShape(kind="fc", op=op, n=rows, c=in_features, m=out_features), params)]
        return [("", LayerShape(kind="matmul", op=op, n=rows, c=in_features, m=out_features,
                                weights_are_activations=True), 0)]
    return shape


def _conv(dims: int, op: Op = "multiply", weight_operand: bool = False) -> Callable[[_Tracer, tuple, dict, Tensor],
                                                                                list[tuple[str, LayerShape, int]]]:
    def shape(t: _Tracer, args: tuple, kwargs: dict, out: Tensor) -> list[tuple[str, LayerShape, int]]:
        x, w, b = _arg(args, kwargs, 0, "input"), _arg(args, kwargs, 1, "weight"), _arg(args, kwargs, 2, "bias")
        groups = int(_arg(args, kwargs, 6, "groups", 1))
        param = weight_operand or t.is_param(w)
        params = (w.numel() + (b.numel() if isinstance(b, Tensor) else 0)) if param else 0
        return [("", _conv_shape(dims, x, out, w.shape, _arg(args, kwargs, 3, "stride", 1), groups, op,
                                 weights_are_activations=not param), params)]
    return shape


def _two(i: int, j: int) -> Callable[[_Tracer, tuple, dict], list[tuple[str, LayerShape, int]]]:
    return lambda t, args, kwargs: _matmul(t, args[i], args[j])


def _methods(name: str) -> list[Any]:
    found = [getattr(torch, name, None), getattr(torch.Tensor, name, None)]
    return [f for f in found if f is not None]


# fn name -> (functions, shaper(tracer, args, kwargs) or shaper(tracer, args, kwargs, output))
_PRE: dict[Any, tuple[str, Callable[..., list[tuple[str, LayerShape, int]]]]] = {}
_POST: dict[Any, tuple[str, Callable[..., list[tuple[str, LayerShape, int]]]]] = {}
for _name, _shaper in (("matmul", _two(0, 1)), ("mm", _two(0, 1)), ("bmm", _two(0, 1)), ("mv", _two(0, 1)),
                       ("dot", _two(0, 1)), ("addmm", _two(1, 2)), ("baddbmm", _two(1, 2))):
    for _f in _methods(_name):
        _PRE[_f] = (_name, _shaper)
_PRE[torch.Tensor.__matmul__] = ("matmul", _two(0, 1))
_PRE[torch.Tensor.__rmatmul__] = ("matmul", _two(1, 0))
_PRE[torch.einsum] = ("einsum", _einsum)
_PRE[F.scaled_dot_product_attention] = ("sdpa", _sdpa)
_PRE[F.linear] = ("linear", _linear())
_POST[F.conv1d] = ("conv1d", _conv(1))
_POST[F.conv2d] = ("conv2d", _conv(2))
_PRE[adder_linear] = ("adder_linear", _linear("absdiff", weight_operand=True))
_POST[adder_conv1d] = ("adder_conv1d", _conv(1, "absdiff", weight_operand=True))
_PRE[shift_linear] = ("shift_linear", _linear("bitshift", weight_operand=True))
_POST[shift_conv1d] = ("shift_conv1d", _conv(1, "bitshift", weight_operand=True))

# Products we cannot shape: issued outside a hooked layer they are unmodelled.
_UNSHAPED: dict[Any, str] = {}
for _name in ("tensordot", "cdist", "conv3d", "conv_transpose1d", "conv_transpose2d", "conv_transpose3d",
              "bilinear", "addbmm", "addmv", "chain_matmul", "kron", "inner", "outer"):
    for _f in _methods(_name) + [getattr(F, _name, None)]:
        if _f is not None:
            _UNSHAPED[_f] = _name
_UNSHAPED[torch.linalg.multi_dot] = "multi_dot"


def _transparent(func: Callable[..., Any]) -> Callable[..., Any]:
    """A copy of a Python torch function that skips its own ``__torch_function__`` dispatch.

    A mode's handler runs with the mode switched off, so the calls made inside a Python-level composite
    (``F.multi_head_attention_forward``: projections, ``bmm``s, ``linear``) would go unseen. Running this copy
    with the mode switched back on lets each of those calls be recorded once.
    """
    glb = dict(func.__globals__)
    never = lambda *a, **k: False  # noqa: E731
    glb.update(has_torch_function=never, has_torch_function_unary=never, has_torch_function_variadic=never)
    clone = types.FunctionType(func.__code__, glb, func.__name__, func.__defaults__, func.__closure__)
    clone.__kwdefaults__ = func.__kwdefaults__
    return clone


_TRANSPARENT: dict[Any, Callable[..., Any]] = {F.multi_head_attention_forward: _transparent(
    F.multi_head_attention_forward)}


class _Mode(TorchFunctionMode):
    def __init__(self, tracer: _Tracer) -> None:
        super().__init__()
        self.tracer = tracer

    def __torch_function__(self, func: Any, arg_types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        t = self.tracer
        if t.depth:
            return func(*args, **kwargs)
        try:
            pre, post, transparent, unshaped = (_PRE.get(func), _POST.get(func), _TRANSPARENT.get(func),
                                                _UNSHAPED.get(func))
        except TypeError:  # an unhashable callable: certainly none of ours
            return func(*args, **kwargs)
        if transparent is not None:
            with self:
                return transparent(*args, **kwargs)
        if unshaped is not None:
            t.not_shaped(unshaped, "no cost model for this function")
        elif pre is not None:
            try:
                t.record(pre[0], pre[1](t, args, kwargs))
            except _NotShaped as err:
                t.not_shaped(pre[0], str(err))
        out = func(*args, **kwargs)
        if post is not None:
            t.record(post[0], post[1](t, args, kwargs, out))
        return out


def _reject_search_spaces(model: nn.Module) -> None:
    """Our hybrid choices, left unfrozen, run a default path through functional calls that the tracer cannot tell
    apart (an adder conv, power-of-two weights): refuse to guess."""
    kinds = tuple(getattr(sys.modules.get(mod), cls) for mod, cls in
                  (("nni_shiftadd.nn.hybrid", "HybridBlock"), ("nni_shiftadd.space.cv", "HybridStage"))
                  if hasattr(sys.modules.get(mod), cls))
    if not kinds:
        return
    for name, m in model.named_modules():
        if isinstance(m, kinds):
            raise ValueError(f"{name or '(root)'} ({type(m).__name__}): a hybrid search-space layer, not a network; "
                             "cost a frozen architecture (space.freeze(arch)) instead")


def trace_layers(model: nn.Module, *example_inputs: Any, unmodelled: Literal["error", "report"] = "error",
                 **forward_kwargs: Any) -> Trace:
    """Run ``model(*example_inputs, **forward_kwargs)`` once and record its compute layers in execution order.

    The pass runs in eval mode (restored afterwards) under ``torch.no_grad()``. Records depend on the input
    shapes only: batch 1 at the deployment resolution/sequence length is what the cost models expect.

    Args:
        unmodelled: ``"error"`` raises ``ValueError`` naming every layer or call that may hide MACs but has
            no cost model; ``"report"`` returns them in :attr:`Trace.unmodelled` instead.

    Returns:
        A :class:`Trace` (``.layers``: list of :class:`LayerRecord`; ``.unmodelled``: list of ``(path, type)``).

    Raises:
        ValueError: something unmodelled (with ``"error"``), or no compute layer at all.
    """
    if unmodelled not in ("error", "report"):
        raise ValueError(f"unmodelled: unknown value {unmodelled!r}; expected 'error' or 'report'")
    _reject_search_spaces(model)
    tracer = _Tracer(model)
    training = {m: m.training for m in model.modules()}
    handles = []
    try:
        for m in model.modules():
            handles.append(m.register_forward_pre_hook(tracer.pre_hook))
            handles.append(m.register_forward_hook(tracer.post_hook, always_call=True))
        model.eval()
        with torch.no_grad(), _Mode(tracer):
            model(*example_inputs, **forward_kwargs)
    finally:
        for h in handles:
            h.remove()
        for m, mode in training.items():
            m.training = mode
    if tracer.unmodelled and unmodelled == "error":
        raise ValueError("; ".join(tracer.unmodelled_reasons) + ". Use a Conv/Linear/Adder/Shift layer, declare "
                         "MAC-free types with register_zero_cost_type(), or pass unmodelled='report' to list "
                         "them in Trace.unmodelled instead")
    if not tracer.layers and not tracer.unmodelled:
        raise ValueError(f"{type(model).__name__}: no compute layer (conv, linear, matmul, attention) ran in the "
                         "forward pass; refusing to report a cost of zero")
    return Trace(tracer.layers, tracer.unmodelled)
