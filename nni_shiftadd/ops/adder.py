"""Add (AdderNet) operators: ``Y = -sum |X - W|`` (paper eq. (2), right), with AdderNet's training rules.

Backward follows SPEC: the weight gradient is the full-precision ``sum g * (X - W)`` (a GEMM minus a
rank-one term, done by BLAS), the input gradient is ``sum g * HardTanh(W - X)``, and the weight gradient
is rescaled by the adaptive learning rate ``eta * sqrt(numel(W)) * grad / ||grad||_2`` unless ``eta`` is
``None``. The batch is processed in chunks so that the im2col workspace stays below
:data:`WORKSPACE_BYTES` whatever the batch size.
"""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.utils import _pair, _single
from torch.overrides import handle_torch_function, has_torch_function_variadic

from .. import kernels

#: Bytes of im2col workspace one chunk of the batch may use (forward and backward each hold about two) ...
WORKSPACE_BYTES = 2 << 20
#: ... unless that would split the batch into more than this many chunks: every chunk costs a few parallel
#: regions, which are cheap on an idle machine but each a scheduler wait on a loaded one.
MAX_CHUNKS = 8

_IntPair = tuple[int, int]


def _check_input(x: Tensor, weight: Tensor, groups: int, rank: int, layout: str) -> None:
    if x.dim() != rank:
        raise ValueError(f"input: expected a {rank}-D tensor {layout}, got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"input: expected a floating-point dtype, got {x.dtype}")
    if not weight.is_floating_point():
        raise ValueError(f"weight: expected a floating-point dtype, got {weight.dtype}")
    if x.device != weight.device:
        raise ValueError(f"weight: on {weight.device}, but the input is on {x.device}")
    if x.dtype != weight.dtype:
        raise ValueError(f"input: dtype {x.dtype} differs from weight dtype {weight.dtype}")
    if groups < 1 or weight.shape[0] % groups:
        raise ValueError(f"groups: {groups} must be >= 1 and divide out_channels={weight.shape[0]}")
    if x.shape[1] != weight.shape[1] * groups:
        raise ValueError(f"input: expected {weight.shape[1] * groups} channels (weight.shape[1]={weight.shape[1]} "
                         f"x groups={groups}) in dim 1, got {x.shape[1]} (shape {tuple(x.shape)})")


def _autocast_inputs(x: Tensor, weight: Tensor) -> tuple[Tensor, Tensor]:
    """Under autocast (mixed precision) the adder runs in float32: |x - w| sums lose too much in 16 bits."""
    try:
        autocast = torch.is_autocast_enabled(x.device.type)
    except RuntimeError:  # a device type autocast does not know (meta)
        autocast = False
    if autocast and x.is_floating_point():
        return x.float(), weight.float()
    return x, weight


def _chunk_size(n: int, cols_per_sample: int, itemsize: int) -> int:
    by_memory = WORKSPACE_BYTES // max(1, cols_per_sample * itemsize)
    return max(1, min(n, max(by_memory, -(-n // MAX_CHUNKS))))


class _Geometry:
    """im2col/col2im for one conv2d geometry, giving columns as [G, K, Nc * L]."""

    def __init__(self, x: Tensor, weight: Tensor, stride: _IntPair, padding: _IntPair, dilation: _IntPair,
                 groups: int, impl: Any) -> None:
        self.impl = impl
        self.kernel = tuple(weight.shape[2:])
        self.stride, self.padding, self.dilation, self.groups = stride, padding, dilation, groups
        self.in_hw = tuple(x.shape[2:])
        self.out_hw = tuple((self.in_hw[i] + 2 * padding[i] - dilation[i] * (self.kernel[i] - 1) - 1) // stride[i] + 1
                            for i in range(2))
        if min(self.out_hw) < 1:
            raise ValueError(f"input: spatial size {self.in_hw} is too small for kernel {self.kernel} with "
                             f"padding {padding} and dilation {dilation} (output would be {self.out_hw})")
        self.L = self.out_hw[0] * self.out_hw[1]
        self.K = weight.shape[1] * self.kernel[0] * self.kernel[1]
        self.pointwise = self.kernel == (1, 1) and stride == (1, 1) and padding == (0, 0)

    def cols(self, x: Tensor) -> Tensor:
        n = x.shape[0]
        if self.pointwise:
            u = x.reshape(n, self.groups, self.K, self.L)
        elif hasattr(self.impl, "im2col"):
            return self.impl.im2col(x, self.kernel, self.stride, self.padding, self.dilation, self.groups,
                                    self.out_hw)
        else:
            u = F.unfold(x, self.kernel, self.dilation, self.padding, self.stride).view(n, self.groups, self.K, self.L)
        return u.permute(1, 2, 0, 3).reshape(self.groups, self.K, n * self.L)

    def uncols(self, d: Tensor, n: int) -> Tensor:
        if not self.pointwise and hasattr(self.impl, "col2im"):
            return self.impl.col2im(d, (n, self.groups * self.K // (self.kernel[0] * self.kernel[1]), *self.in_hw),
                                    self.kernel, self.stride, self.padding, self.dilation, self.groups, self.out_hw)
        d = d.view(self.groups, self.K, n, self.L).permute(2, 0, 1, 3).reshape(n, self.groups * self.K, self.L)
        if self.pointwise:
            return d.view(n, -1, *self.in_hw)
        return F.fold(d, self.in_hw, self.kernel, self.dilation, self.padding, self.stride)

    def rows(self, y: Tensor) -> Tensor:
        """[Nc, O, Ho, Wo] -> [G, O/G, Nc * L]"""
        n = y.shape[0]
        return y.reshape(n, self.groups, -1, self.L).permute(1, 2, 0, 3).reshape(self.groups, -1, n * self.L)

    def unrows(self, r: Tensor, n: int) -> Tensor:
        return r.view(self.groups, -1, n, self.L).permute(2, 0, 1, 3).reshape(n, -1, *self.out_hw)


class AdderFunction(torch.autograd.Function):
    """Autograd function of the adder conv2d, dispatching to the kernels of :mod:`nni_shiftadd.kernels`."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, weight: Tensor, stride: _IntPair, padding: _IntPair, dilation: _IntPair,
                groups: int, eta: float | None, backend: str) -> Tensor:
        impl = kernels.select(x, backend)
        geo = _Geometry(x, weight, stride, padding, dilation, groups, impl)
        w = weight.reshape(groups, -1, geo.K)
        n = x.shape[0]
        y = x.new_empty(n, weight.shape[0], *geo.out_hw)
        step = _chunk_size(n, geo.K * geo.L * groups, x.element_size())
        for n0 in range(0, n, step):
            xc = x[n0:n0 + step]
            y[n0:n0 + step] = geo.unrows(impl.l1mm(w, geo.cols(xc)), xc.shape[0])
        ctx.save_for_backward(x, weight)
        ctx.geo, ctx.eta, ctx.backend = geo, eta, backend
        return y

    @staticmethod
    def backward(ctx: Any, grad_y: Tensor) -> tuple[Tensor | None, ...]:
        x, weight = ctx.saved_tensors
        geo: _Geometry = ctx.geo
        impl = geo.impl
        G = geo.groups
        w = weight.reshape(G, -1, geo.K)
        need_x, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        grad_x = torch.empty_like(x) if need_x else None
        grad_w: Tensor | None = None  # the first chunk's GEMM writes it: no zero-filled weight-sized buffer
        grad_sum = w.new_zeros(G, w.shape[1], 1) if need_w else None
        n = x.shape[0]
        step = _chunk_size(n, geo.K * geo.L * G, x.element_size())
        for n0 in range(0, n, step):
            xc = x[n0:n0 + step]
            cols = geo.cols(xc)
            rows = geo.rows(grad_y[n0:n0 + step])
            if need_w:
                if grad_w is None:
                    grad_w = torch.bmm(rows, cols.transpose(1, 2))
                else:
                    grad_w.baddbmm_(rows, cols.transpose(1, 2))
                grad_sum += rows.sum(2, keepdim=True)
            if need_x:
                grad_x[n0:n0 + step] = geo.uncols(impl.htmm(w, cols, rows), xc.shape[0])
        if need_w:
            if grad_w is None:  # an empty batch
                grad_w = torch.zeros_like(w)
            grad_w.addcmul_(w, grad_sum, value=-1.0)
            if ctx.eta is not None:
                adaptive_lr_scale(grad_w, ctx.eta, inplace=True)
            grad_w = grad_w.view_as(weight)
        return grad_x, grad_w, None, None, None, None, None, None


class DepthwiseAdder1dFunction(torch.autograd.Function):
    """The depthwise (one filter per channel), stride-1 1-D adder convolution of the NLP lightweight branch:
    ``y[n, c, t] = -sum_j |x[n, c, t + j] - w[c, j]|`` on the zero-padded input, with AdderNet's gradients
    (weights: ``sum g (x - w)``; inputs: ``sum g HardTanh(w - x)``). Vectorised over batch, channels and positions
    with a loop over the ``k`` taps, instead of the general kernel's im2col of a ``groups = channels`` problem."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, weight: Tensor, padding: int, eta: float | None) -> Tensor:  # type: ignore[override]
        xp = F.pad(x, (padding, padding))
        k = weight.shape[-1]
        steps = xp.shape[-1] - k + 1
        w = weight.view(1, -1, k)
        y = x.new_zeros(x.shape[0], x.shape[1], steps)
        for j in range(k):
            y.sub_((xp[:, :, j:j + steps] - w[:, :, j:j + 1]).abs_())
        ctx.save_for_backward(xp, weight)
        ctx.padding, ctx.eta, ctx.length = padding, eta, x.shape[-1]
        return y

    @staticmethod
    def backward(ctx: Any, grad_y: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        xp, weight = ctx.saved_tensors
        k = weight.shape[-1]
        steps = grad_y.shape[-1]
        w = weight.view(1, -1, k)
        grad_xp = torch.zeros_like(xp) if ctx.needs_input_grad[0] else None
        grad_w = torch.empty_like(weight).view(-1, k) if ctx.needs_input_grad[1] else None
        g_sum = grad_y.sum(dim=(0, 2)) if grad_w is not None else None
        for j in range(k):
            window = xp[:, :, j:j + steps]
            if grad_w is not None:
                grad_w[:, j] = (grad_y * window).sum(dim=(0, 2)) - w[0, :, j] * g_sum
            if grad_xp is not None:
                grad_xp[:, :, j:j + steps].addcmul_(grad_y, (w[:, :, j:j + 1] - window).clamp_(-1.0, 1.0))
        grad_x = grad_xp[:, :, ctx.padding:ctx.padding + ctx.length] if grad_xp is not None else None
        if grad_w is not None:
            if ctx.eta is not None:
                adaptive_lr_scale(grad_w, ctx.eta, inplace=True)
            grad_w = grad_w.view_as(weight)
        return grad_x, grad_w, None, None


def adaptive_lr_scale(grad: Tensor, eta: float, inplace: bool = False) -> Tensor:
    """AdderNet's adaptive learning rate: ``eta * sqrt(numel) * grad / ||grad||_2`` (zero stays zero)."""
    norm = grad.norm()
    # a zero gradient stays zero (eta * sqrt(n) / tiny would overflow to inf, and 0 * inf is NaN)
    factor = torch.where(norm > 0, eta * math.sqrt(grad.numel()) / norm.clamp_min(1e-30), torch.zeros_like(norm))
    return grad.mul_(factor) if inplace else grad * factor


def adder_conv2d(x: Tensor, weight: Tensor, bias: Tensor | None = None, stride: int | _IntPair = 1,
                 padding: int | _IntPair = 0, dilation: int | _IntPair = 1, groups: int = 1,
                 eta: float | None = None, backend: str = "auto") -> Tensor:
    """Adder counterpart of :func:`torch.nn.functional.conv2d`: ``Y = -sum |X - W| (+ bias)`` (eq. (2)).

    ``eta`` turns on AdderNet's adaptive learning-rate scaling of the weight gradient; ``backend`` is
    ``"auto"``, ``"cpu"``, ``"triton"`` or ``"reference"``.
    """
    if weight.dim() != 4:
        raise ValueError(f"weight: expected a 4-D tensor (out_channels, in_channels/groups, kH, kW), "
                         f"got shape {tuple(weight.shape)}")
    x, weight = _autocast_inputs(x, weight)
    _check_input(x, weight, groups, 4, "(N, C, H, W)")
    y = AdderFunction.apply(x, weight, _pair(stride), _pair(padding), _pair(dilation), groups, eta, backend)
    return y if bias is None else y + bias.view(1, -1, 1, 1)


def adder_linear(x: Tensor, weight: Tensor, bias: Tensor | None = None, eta: float | None = None,
                 backend: str = "auto") -> Tensor:
    """Adder counterpart of :func:`torch.nn.functional.linear`: ``y[o] = -sum_k |x[k] - W[o, k]|``. Like ``F.linear``
    it takes part in ``__torch_function__`` dispatch, so a :class:`~torch.overrides.TorchFunctionMode` (the cost
    tracer) sees it as one call."""
    if has_torch_function_variadic(x, weight, bias):
        return handle_torch_function(adder_linear, (x, weight, bias), x, weight, bias, eta=eta, backend=backend)
    if weight.dim() != 2:
        raise ValueError(f"weight: expected a 2-D tensor (out_features, in_features), got shape {tuple(weight.shape)}")
    if x.dim() < 1:
        raise ValueError("input: expected a tensor of shape (*, in_features), got a scalar")
    if x.shape[-1] != weight.shape[1]:
        raise ValueError(f"input: expected in_features={weight.shape[1]} in the last dim, got shape {tuple(x.shape)}")
    x, weight = _autocast_inputs(x, weight)
    lead = x.shape[:-1]
    x2 = x.reshape(-1, weight.shape[1], 1, 1)
    _check_input(x2, weight[:, :, None, None], 1, 4, "")
    y = AdderFunction.apply(x2, weight[:, :, None, None], (1, 1), (0, 0), (1, 1), 1, eta, backend)
    y = y.view(*lead, weight.shape[0])
    return y if bias is None else y + bias


def adder_conv1d(x: Tensor, weight: Tensor, bias: Tensor | None = None, stride: int = 1, padding: int = 0,
                 dilation: int = 1, groups: int = 1, eta: float | None = None, backend: str = "auto") -> Tensor:
    """Adder counterpart of :func:`torch.nn.functional.conv1d` (the NLP lightweight branch's form); dispatched like
    :func:`adder_linear`."""
    if has_torch_function_variadic(x, weight, bias):
        return handle_torch_function(adder_conv1d, (x, weight, bias), x, weight, bias, stride=stride,
                                     padding=padding, dilation=dilation, groups=groups, eta=eta, backend=backend)
    if weight.dim() != 3:
        raise ValueError(f"weight: expected a 3-D tensor (out_channels, in_channels/groups, k), "
                         f"got shape {tuple(weight.shape)}")
    x, weight = _autocast_inputs(x, weight)
    _check_input(x, weight, groups, 3, "(N, C, L)")
    stride, padding, dilation = _single(stride)[0], _single(padding)[0], _single(dilation)[0]
    depthwise = groups == x.shape[1] == weight.shape[0] and weight.shape[1] == 1
    if backend == "auto" and depthwise and stride == 1 and dilation == 1:
        y = DepthwiseAdder1dFunction.apply(x, weight, padding, eta)
    else:
        y = AdderFunction.apply(x.unsqueeze(2), weight.unsqueeze(2), (1, stride), (0, padding), (1, dilation),
                                groups, eta, backend).squeeze(2)
    return y if bias is None else y + bias.view(1, -1, 1)


class _AdderMixin:
    """Shared options of the adder modules: adaptive learning rate and kernel backend, N(0, 1) init."""

    def _init_adder(self, adaptive_lr: bool, eta: float, backend: str,
                    conv: tuple[int, int, int, str] | None = None) -> None:
        if conv is not None:
            in_channels, out_channels, groups, padding_mode = conv
            if padding_mode != "zeros":
                raise ValueError(f"padding_mode: only 'zeros' is supported by adder layers, got {padding_mode!r}")
            _check_channels(in_channels, out_channels, groups)
        if eta <= 0:
            raise ValueError(f"eta: must be > 0, got {eta}")
        if backend not in ("auto", *kernels.BACKENDS):
            raise ValueError(f"backend: unknown value {backend!r}; expected one of {['auto', *kernels.BACKENDS]}")
        self.adaptive_lr, self.eta, self.backend = adaptive_lr, eta, backend

    @property
    def _eta(self) -> float | None:
        return self.eta if self.adaptive_lr else None

    def reset_parameters(self) -> None:
        nn.init.normal_(self.weight, 0.0, 1.0)  # SPEC: adder weights start N(0, 1)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def _explicit_padding(self, x: Tensor) -> tuple[Tensor, tuple[int, ...]]:
        """Input and numeric padding; ``padding='same'``/``'valid'`` become an explicit pad of the input."""
        if isinstance(self.padding, str):
            return F.pad(x, self._reversed_padding_repeated_twice), (0,) * len(self.kernel_size)
        return x, self.padding

    def extra_repr(self) -> str:
        return super().extra_repr() + f", adaptive_lr={self.adaptive_lr}, eta={self.eta}" + (
            f", backend={self.backend!r}" if self.backend != "auto" else "")


class AdderConv2d(_AdderMixin, nn.Conv2d):
    """Drop-in :class:`torch.nn.Conv2d` computing ``-sum |X - W|`` (AdderNet). Zero padding only."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | _IntPair, stride: int | _IntPair = 1,
                 padding: int | _IntPair | str = 0, dilation: int | _IntPair = 1, groups: int = 1, bias: bool = True,
                 padding_mode: str = "zeros", device: Any = None, dtype: Any = None, *, adaptive_lr: bool = True,
                 eta: float = 0.2, backend: str = "auto") -> None:
        self._init_adder(adaptive_lr, eta, backend, (in_channels, out_channels, groups, padding_mode))
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias,
                         padding_mode, device, dtype)

    def forward(self, x: Tensor) -> Tensor:
        x, padding = self._explicit_padding(x)
        return adder_conv2d(x, self.weight, self.bias, self.stride, padding, self.dilation, self.groups,
                            self._eta, self.backend)


class AdderConv1d(_AdderMixin, nn.Conv1d):
    """Drop-in :class:`torch.nn.Conv1d` computing ``-sum |X - W|``, e.g. for the NLP lightweight branch."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 padding: int | str = 0, dilation: int = 1, groups: int = 1, bias: bool = True,
                 padding_mode: str = "zeros", device: Any = None, dtype: Any = None, *, adaptive_lr: bool = True,
                 eta: float = 0.2, backend: str = "auto") -> None:
        self._init_adder(adaptive_lr, eta, backend, (in_channels, out_channels, groups, padding_mode))
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias,
                         padding_mode, device, dtype)

    def forward(self, x: Tensor) -> Tensor:
        x, padding = self._explicit_padding(x)
        return adder_conv1d(x, self.weight, self.bias, self.stride[0], padding[0], self.dilation[0], self.groups,
                            self._eta, self.backend)


class AdderLinear(_AdderMixin, nn.Linear):
    """Drop-in :class:`torch.nn.Linear` computing ``y[o] = -sum_k |x[k] - W[o, k]|``."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, device: Any = None,
                 dtype: Any = None, *, adaptive_lr: bool = True, eta: float = 0.2, backend: str = "auto") -> None:
        self._init_adder(adaptive_lr, eta, backend)
        super().__init__(in_features, out_features, bias, device, dtype)

    def forward(self, x: Tensor) -> Tensor:
        return adder_linear(x, self.weight, self.bias, self._eta, self.backend)


def _check_channels(in_channels: int, out_channels: int, groups: int) -> None:
    if groups < 1:
        raise ValueError(f"groups: must be >= 1, got {groups}")
    if in_channels % groups:
        raise ValueError(f"groups: {groups} must divide in_channels={in_channels}")
    if out_channels % groups:
        raise ValueError(f"groups: {groups} must divide out_channels={out_channels}")
