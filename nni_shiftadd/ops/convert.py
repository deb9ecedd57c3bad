"""Turn the Conv/Linear layers of any model (a timm model, say) into Add or Shift layers in one call."""
from __future__ import annotations

import copy
import fnmatch
from collections.abc import Iterable
from typing import Any

from torch import nn

from ..vocabulary import MULTIPLICATION_FREE as OP_TYPES
from .factory import LAYERS, create_layer, layer_class

_HYBRID = tuple(cls for operator, forms in LAYERS.items() if operator != "multiply" for cls in forms.values())


def default_exclusions(model: nn.Module) -> list[str]:
    """The stem and the classifier, which multiplication-free baselines keep multiplicative (SPEC, Table 4).

    Taken from a timm model's ``pretrained_cfg`` (``first_conv``, ``classifier``) when it has one, else the
    first convolution and the last linear layer in module order.
    """
    cfg = getattr(model, "pretrained_cfg", None) or getattr(model, "default_cfg", None) or {}
    names: list[str] = []
    for key in ("first_conv", "classifier"):
        value = cfg.get(key)
        names.extend([value] if isinstance(value, str) else list(value or []))
    if names:
        return names
    convs = [n for n, m in model.named_modules() if isinstance(m, (nn.Conv1d, nn.Conv2d))]
    linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    return convs[:1] + linears[-1:]


def _excluded(name: str, patterns: Iterable[str]) -> bool:
    return any(name == p or name.startswith(p + ".") or fnmatch.fnmatchcase(name, p) for p in patterns)


def _replacement(module: nn.Module, to: str, copy_weights: bool, op_kwargs: dict[str, Any]) -> nn.Module | None:
    device, dtype = module.weight.device, module.weight.dtype
    common = dict(device=device, dtype=dtype, **op_kwargs)
    if isinstance(module, (nn.Conv2d, nn.Conv1d)):
        form = "conv2d" if module.weight.dim() == 4 else "conv1d"
        if layer_class(to, form) is None:  # e.g. Shift has no conv1d layer
            return None
        if module.padding_mode != "zeros":
            raise ValueError(f"padding_mode: {module.padding_mode!r} of {type(module).__name__} cannot be converted; "
                             "only 'zeros' is supported")
        new = create_layer(to, form, module.in_channels, module.out_channels, module.kernel_size, module.stride,
                           module.padding, module.dilation, module.groups, module.bias is not None, **common)
    elif isinstance(module, nn.Linear):
        new = create_layer(to, "linear", module.in_features, module.out_features, module.bias is not None, **common)
    else:
        return None
    if copy_weights:
        if hasattr(new, "load_float_weight"):  # Shift-PS derives its exponent and sign from the weights
            new.load_float_weight(module.weight.detach())
        else:
            new.weight.data.copy_(module.weight.detach())
        if module.bias is not None:
            new.bias.data.copy_(module.bias.detach())
    new.train(module.training)
    return new


def convert_model(model: nn.Module, to: str, *, exclude: Iterable[str] | str = "auto", copy_weights: bool = True,
                  inplace: bool = False, **op_kwargs: Any) -> nn.Module:
    """Replace every ``nn.Conv2d``/``nn.Conv1d``/``nn.Linear`` of ``model`` by its Add or Shift counterpart.

    Args:
        to: ``"add"`` (AdderNet) or ``"shift"`` (DeepShift; Conv1d layers are left as they are).
        exclude: qualified module names or glob patterns to keep (a name also keeps its children);
            ``"auto"`` keeps the stem and the classifier (:func:`default_exclusions`); ``()`` keeps nothing.
        copy_weights: start from the existing weights (Shift-PS derives its exponent and sign from them);
            ``False`` uses each op's own initialisation (N(0, 1) for Add, as AdderNet trains from scratch).
        inplace: modify ``model`` instead of a deep copy.
        op_kwargs: passed to every new layer, e.g. ``variant="PS"`` or ``eta=0.1``.

    Returns:
        The converted model; ``model.nni_shiftadd_converted`` lists the converted layer names.
    """
    if to not in OP_TYPES:
        raise ValueError(f"to: unknown value {to!r}; expected one of {list(OP_TYPES)}")
    patterns = default_exclusions(model) if exclude == "auto" else (
        [exclude] if isinstance(exclude, str) else list(exclude))
    known = {n for n, _ in model.named_modules()}
    for p in patterns:
        if not any(ch in p for ch in "*?[") and p not in known:
            raise ValueError(f"exclude: {p!r} names no module of {type(model).__name__}; "
                             f"modules include {sorted(known - {''})[:12]}")
    if not inplace:
        model = copy.deepcopy(model)
    converted = []
    # nn.MultiheadAttention reads its out_proj's weight directly (F.multi_head_attention_forward): leave it alone
    inside_mha = {f"{n}.{c}" for n, m in model.named_modules() if isinstance(m, nn.MultiheadAttention)
                  for c, _ in m.named_children()}
    for name, module in list(model.named_modules()):
        if not name or isinstance(module, _HYBRID) or _excluded(name, patterns) or name in inside_mha:
            continue
        if type(module) not in (nn.Conv1d, nn.Conv2d, nn.Linear) and not _is_plain_subclass(module):
            continue
        new = _replacement(module, to, copy_weights, op_kwargs)
        if new is None:
            continue
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name), child, new)
        converted.append(name)
    model.nni_shiftadd_converted = converted
    return model


def _is_plain_subclass(module: nn.Module) -> bool:
    """Subclasses are converted only when their forward is the plain conv/linear one (so ``Conv2dSame``, which pads
    in its own forward, is left as it is)."""
    return isinstance(module, (nn.Conv2d, nn.Conv1d, nn.Linear)) and type(module).forward in (
        nn.Conv2d.forward, nn.Conv1d.forward, nn.Linear.forward)
