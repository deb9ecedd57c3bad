"""The hybrid layer of ShiftAddNAS: one position of the network that can be an Attn block or a Conv, Shift or Add
bottleneck (1x1, 3x3, 1x1 with a residual, SPEC), the three bottlenecks sharing weights (:mod:`nni_shiftadd.hws`),
or a block of the user's own (``extra_candidates``).

:class:`HybridBlock` holds every candidate's parameters and runs the one it is told to; :class:`HybridChoice` makes it
an NNI mutable (``nni.choice`` over the candidates) that works in any ``ModelSpace``. Its one-shot forms, for NNI's
one-shot strategies, live apart in :mod:`nni_shiftadd.nn.oneshot`.
"""
from __future__ import annotations

import copy
import inspect
from collections.abc import Callable, Mapping
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from nni.mutable import Categorical, ensure_frozen
from nni.nas.nn.pytorch import MutableModule
from torch import Tensor, nn

from ..hws import MODES, Mode, SharedConvWeight, add_auxiliary_loss, position_kl, ranks_memoised
from ..ops.factory import block_conv2d, create_layer
from ..vocabulary import BLOCKS as CANDIDATES
from ..vocabulary import CONV_FAMILY as _CONV_OPS
from .attention import AttnBlock


def _check_candidates(candidates: Sequence[str]) -> tuple[str, ...]:
    candidates = tuple(candidates)
    if not candidates:
        raise ValueError("candidates: at least one block type is needed; allowed: " + ", ".join(CANDIDATES))
    for c in candidates:
        if c not in CANDIDATES:
            raise ValueError(f"candidates: unknown block type {c!r}; allowed: {list(CANDIDATES)}")
    if len(set(candidates)) != len(candidates):
        raise ValueError(f"candidates: duplicates in {list(candidates)}")
    return candidates


#: A user candidate: ``factory(in_channels, out_channels, stride)`` returns a module mapping ``(N, in, H, W)`` to
#: ``(N, out, H / stride, W / stride)``; a factory with a ``pools`` parameter also receives the position's shared
#: weight pools (:class:`~nni_shiftadd.hws.SharedConvWeight` under ``"reduce"``, ``"spatial"``, ``"expand"`` and,
#: when the shape changes, ``"shortcut"``).
CandidateFactory = Callable[..., nn.Module]


def _check_extra(extra: Mapping[str, CandidateFactory] | None) -> dict[str, CandidateFactory]:
    extra = dict(extra or {})
    for name, factory in extra.items():
        if not isinstance(name, str) or not name.isidentifier():
            raise ValueError(f"extra_candidates: name {name!r} must be a Python identifier (it names a submodule)")
        if name in CANDIDATES:
            raise ValueError(f"extra_candidates: {name!r} is a built-in block type ({list(CANDIDATES)}); "
                             "give your block another name")
        if not callable(factory):
            raise ValueError(f"extra_candidates: {name!r} must map to a factory(in_channels, out_channels, stride), "
                             f"got {type(factory).__name__}")
    return extra


class HybridBlock(nn.Module):
    """Every candidate of one layer position. ``forward(x, op)`` runs candidate ``op``.

    The bottleneck's four convolutions (1x1 reduce, 3x3 with the stride, 1x1 expand, and the 1x1 projection of the
    shortcut when the shape changes) are :class:`~nni_shiftadd.hws.SharedConvWeight` pools shared by the Conv,
    Shift and Add candidates; each candidate keeps its own BatchNorms (their statistics differ by operator). In
    ``hws`` mode the eq. (5) KL terms of the pools join the loss through the backward pass (``kl_weight``).

    ``extra_candidates`` adds the user's own blocks (name -> :data:`CandidateFactory`) after the built-in ones; a
    factory that takes ``pools`` reads the shared weights through them (``pools["spatial"].weight("conv")``), so its
    gradients land on the pool the Conv/Shift/Add candidates train.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1,
                 candidates: Sequence[str] = CANDIDATES, *, mode: Mode = "hws", expansion: int = 4,
                 kl_weight: float = 1.0, eta: float = 0.2, attn_kwargs: dict[str, Any] | None = None,
                 extra_candidates: Mapping[str, CandidateFactory] | None = None, **pool_kwargs: Any) -> None:
        super().__init__()
        builtin = _check_candidates(candidates) if candidates or not extra_candidates else ()
        extra = _check_extra(extra_candidates)
        self.candidates = builtin + tuple(extra)
        if mode not in MODES:
            raise ValueError(f"mode: unknown value {mode!r}; expected one of {list(MODES)}")
        if stride not in (1, 2):
            raise ValueError(f"stride: expected 1 (keep the resolution) or 2 (halve it), got {stride}")
        self.in_channels, self.out_channels, self.stride, self.mode = in_channels, out_channels, stride, mode
        self.kl_weight, self.eta = kl_weight, eta
        attention = [c for c in self.candidates if c not in _CONV_OPS and c not in extra]
        self.attn = AttnBlock(in_channels, out_channels, stride, **(attn_kwargs or {})) if attention else None
        ops = tuple(c for c in self.candidates if c in _CONV_OPS)
        self.conv_ops = ops
        if ops:
            mid = max(1, out_channels // expansion)
            shapes = {"reduce": (mid, in_channels, 1, 1), "spatial": (mid, mid, 3, 3), "expand": (out_channels, mid, 1, 1)}
            if stride != 1 or in_channels != out_channels:
                shapes["shortcut"] = (out_channels, in_channels, 1, 1)
            self.pools = nn.ModuleDict({k: SharedConvWeight(s, ops, mode, **pool_kwargs) for k, s in shapes.items()})
            self.norms = nn.ModuleDict({op: nn.ModuleDict({k: nn.BatchNorm2d(s[0]) for k, s in shapes.items()})
                                        for op in ops})
            for op in ops:  # zero-init the last BN so that each bottleneck starts as its shortcut
                nn.init.zeros_(self.norms[op]["expand"].weight)
        self.extra = nn.ModuleDict({name: self._build_extra(name, factory, in_channels, out_channels, stride)
                                    for name, factory in extra.items()})

    def _build_extra(self, name: str, factory: CandidateFactory, in_channels: int, out_channels: int,
                     stride: int) -> nn.Module:
        kwargs: dict[str, Any] = {}
        try:
            wants_pools = "pools" in inspect.signature(factory).parameters
        except (TypeError, ValueError):  # a builtin or C callable: no introspection, no pools
            wants_pools = False
        if wants_pools:
            if not self.conv_ops:
                raise ValueError(f"extra_candidates: {name!r} asks for the shared pools, which exist only beside a "
                                 f"Conv, Shift or Add candidate; candidates here are {list(self.candidates)}")
            kwargs["pools"] = self.pools
        module = factory(in_channels, out_channels, stride, **kwargs)
        if not isinstance(module, nn.Module):
            raise ValueError(f"extra_candidates: the factory of {name!r} returned {type(module).__name__}, "
                             "not a torch.nn.Module")
        return module

    def _conv(self, op: str, x: Tensor, key: str) -> Tensor:
        w = self.pools[key].weight(op)
        stride = self.stride if key in ("spatial", "shortcut") else 1
        y = block_conv2d(op, x, w, stride=stride, padding=w.shape[-1] // 2, eta=self.pools[key].add_eta(self.eta))
        return self.norms[op][key](y)

    def forward(self, x: Tensor, op: str) -> Tensor:
        if op not in self.candidates:
            raise ValueError(f"op: {op!r} is not a candidate here; candidates are {list(self.candidates)}")
        if op in self.extra:
            return self.extra[op](x)
        if op not in self.conv_ops:  # the attention candidate
            return self.attn(x)
        with ranks_memoised(list(self.pools.values())):
            return self._bottleneck(x, op)

    def _bottleneck(self, x: Tensor, op: str) -> Tensor:
        y = F.relu(self._conv(op, x, "reduce"))
        y = F.relu(self._conv(op, y, "spatial"))
        y = self._conv(op, y, "expand")
        shortcut = self._conv(op, x, "shortcut") if "shortcut" in self.pools else x
        out = F.relu(y + shortcut)
        if self.mode == "hws" and self.training and self.kl_weight != 0 and torch.is_grad_enabled():
            out = add_auxiliary_loss(out, self.kl(), self.kl_weight)
        return out

    def kl(self) -> Tensor:
        """Sum of the eq. (5) KL terms of this position's pools (0 outside ``hws`` mode)."""
        return position_kl(list(self.pools.values()) if self.conv_ops else [])

    @torch.no_grad()
    def export(self, op: str) -> nn.Module:
        """A standalone module of candidate ``op`` with the weights it uses here: Conv as ``nn.Conv2d``, Shift as a
        ``ShiftConv2d`` holding its power-of-two weights, Add as an ``AdderConv2d`` holding ``T(W)``."""
        if op not in self.candidates:
            raise ValueError(f"op: {op!r} is not a candidate here; candidates are {list(self.candidates)}")
        if op in self.extra:
            return copy.deepcopy(self.extra[op])
        if op not in self.conv_ops:  # the attention candidate
            return copy.deepcopy(self.attn)
        convs = {}
        for key, pool in self.pools.items():
            w = pool.weight(op).detach().clone()
            out_c, in_c, k, _ = w.shape
            stride = self.stride if key in ("spatial", "shortcut") else 1
            # a Shift layer holds the pool's power-of-two weights as DeepShift-Q, an Add layer T(W)
            layer = create_layer(op, "conv2d", in_c, out_c, k, stride, k // 2, bias=False, device=w.device,
                                 dtype=w.dtype, options={"variant": "Q", "weight_bits": pool.weight_bits,
                                                         "eta": self.eta})
            layer.weight.copy_(w)
            convs[key] = nn.Sequential(layer, _copy_bn(self.norms[op][key]))
        return Bottleneck(convs)


def _copy_bn(bn: nn.BatchNorm2d) -> nn.BatchNorm2d:
    return copy.deepcopy(bn)


class Bottleneck(nn.Module):
    """A frozen Conv/Shift/Add bottleneck exported from a :class:`HybridBlock` (1x1, 3x3, 1x1, residual)."""

    def __init__(self, convs: dict[str, nn.Module]) -> None:
        super().__init__()
        self.reduce, self.spatial, self.expand = convs["reduce"], convs["spatial"], convs["expand"]
        self.shortcut = convs.get("shortcut")

    def forward(self, x: Tensor) -> Tensor:
        y = self.expand(F.relu(self.spatial(F.relu(self.reduce(x)))))
        return F.relu(y + (x if self.shortcut is None else self.shortcut(x)))


class HybridChoice(MutableModule):
    """The hybrid layer choice as an NNI mutable: ``nni.choice(label, candidates)`` over Attn/Conv/Shift/Add blocks
    and any ``extra_candidates`` of the user's (see :class:`HybridBlock`).

    In a ``ModelSpace``: ``space.random()`` samples it, ``space.freeze(sample)`` turns it into the chosen block
    with the weights it has here (:meth:`HybridBlock.export`), and NNI's one-shot strategies (RandomOneShot, ENAS,
    DARTS, GumbelDARTS, Proxyless) train it through :func:`~nni_shiftadd.nn.oneshot.oneshot_hooks`. Outside one-shot
    training its forward runs the default (first) candidate.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1,
                 candidates: Sequence[str] = CANDIDATES, *, label: str | None = None, **block_kwargs: Any) -> None:
        super().__init__()
        self.block = HybridBlock(in_channels, out_channels, stride, candidates, **block_kwargs)
        self.choice = Categorical(list(self.block.candidates), label=label)
        self.add_mutable(self.choice)
        self._dry_run_choice = ensure_frozen(self.choice)
        self.active: str | None = None  # set by a supernet's activate(); else the dry-run (first) candidate runs

    @property
    def label(self) -> str:
        return self.choice.label

    def check_contains(self, sample: dict[str, Any]) -> Any:
        return self.choice.check_contains(sample)

    def freeze(self, sample: dict[str, Any]) -> nn.Module:
        return self.block.export(self.choice.freeze(sample))

    @classmethod
    def create_fixed_module(cls, sample: dict, *args: Any, **kwargs: Any) -> nn.Module:
        """Under ``nni.nas.space.model_context(sample)`` (NNI's "simplified" model format re-creates the space
        that way) build the chosen block directly, freshly initialised."""
        return build_then_freeze(cls, sample, *args, **kwargs)

    def forward(self, x: Tensor) -> Tensor:
        return self.block(x, self.active or self._dry_run_choice)


def build_then_freeze(cls: type, sample: dict, *args: Any, **kwargs: Any) -> nn.Module:
    """``cls(*args, **kwargs).freeze(sample)`` without going through NNI's ``MutableModule.__new__`` again (it is
    what called ``create_fixed_module``)."""
    instance = nn.Module.__new__(cls)
    instance.__init__(*args, **kwargs)
    return instance.freeze(sample)
