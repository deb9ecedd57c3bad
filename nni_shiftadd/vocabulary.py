"""The block vocabulary of ShiftAddNAS, declared once: every block type with what each part of the package needs,
the operator kinds of the cost model, and the multi-branch names of the translation space.

A block type (:class:`BlockType`) says which family it belongs to (``attention``, or ``convolution``: the types that
share one weight pool per position under heterogeneous weight sharing), how plots show it, which operator its
weights run (:data:`OPERATORS`: a multiply, a power-of-two shift, AdderNet's ``|x - w|``), how it reads a shared
pool and how its own weights start (paper Sec. 3.2), the distribution its weights should follow (the target of the
eq. (5) terms), and its operator's defaults. The layer that runs it is built by one factory,
:func:`nni_shiftadd.ops.factory.create_layer`; every other part looks its traits up here instead of naming it.

A multi-branch block ``"attn+conv"`` runs attention on one half of the channels and the named convolution on the
other (paper Sec. 3.1, Table 1).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, Literal

__all__ = ["ADDER", "ATTENTION", "BLOCKS", "BLOCK_TYPES", "CONV_FAMILY", "DECODER_BLOCKS", "ENCODER_BLOCKS", "MULTI_BRANCH",
           "MULTIPLICATION_FREE", "OPERATORS", "REFERENCE_BLOCK",
           "BlockType", "Operator", "block_type", "branches", "multi_branch", "register_block_type"]


@dataclasses.dataclass(frozen=True)
class Operator:
    """What one multiply-accumulate of a layer costs in each arithmetic operation (paper Table 4's #Mult, #Add,
    #Shift per MAC)."""

    mult: int
    add: int
    shift: int
    unit: Literal["mult", "add", "shift"]  # the arithmetic unit one of its MACs occupies (its compute energy)
    # where its weights sit on a b-bit fixed-point datapath (nni_shiftadd.quant): on a grid of their own range;
    # on the input's grid (integer hardware subtracts codes of one grid only); or as they are (already b-bit codes)
    weight_grid: Literal["own", "input", "exact"] = "own"


#: The operator kinds a layer's weights run, by name: a multiply-accumulate; a power-of-two weight (a shift and an
#: add, DeepShift); AdderNet's ``-|x - w|`` accumulated (two additions). The cost model's layers carry one of these;
#: ``mult``, ``add`` and ``shift`` are only ever the arithmetic operations they count.
OPERATORS: dict[str, Operator] = {
    "multiply": Operator(mult=1, add=1, shift=0, unit="mult"),
    "bitshift": Operator(mult=0, add=1, shift=1, unit="shift", weight_grid="exact"),
    "absdiff": Operator(mult=0, add=2, shift=0, unit="add", weight_grid="input"),
}


@dataclasses.dataclass(frozen=True)
class BlockType:
    """One block type: its name in architectures and YAML, and its traits (see the module docstring)."""

    name: str
    display: str  # how tables and plots name it
    colour: str  # its colour in every plot (Okabe-Ito, colour-blind safe)
    family: Literal["attention", "convolution"]
    operator: str  # a key of OPERATORS
    pool_view: Literal["as_is", "power_of_two", "transform"] | None = None  # how it reads a shared pool (convolution)
    own_init: Literal["fan_in", "unit"] = "fan_in"  # its own weights: N(0, 1 / fan_in), or N(0, 1) as AdderNet
    prior: Literal["gaussian", "laplace"] = "gaussian"  # the distribution its weights follow (eq. (5)'s target)
    defaults: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # its layer's keyword defaults
    needs_output_norm: bool = False  # its outputs scale with the fan-in (no BatchNorm follows in a transformer)
    cnn_family: str = ""  # the expert-designed CNNs built of it (paper Table 4: ResNet, DeepShift, AdderNet)

    def __post_init__(self) -> None:
        if self.operator not in OPERATORS:
            raise ValueError(f"operator: {self.operator!r} is not one of {list(OPERATORS)}")
        if (self.family == "convolution") != (self.pool_view is not None):
            raise ValueError(f"pool_view: a convolution-family block type reads a shared pool (as_is, power_of_two "
                             f"or transform); an attention one does not; got {self.pool_view!r} for {self.family}")


#: Every block type, by name, in the order spaces list them.
BLOCK_TYPES: dict[str, BlockType] = {}


def register_block_type(block: BlockType) -> BlockType:
    """Add ``block`` to :data:`BLOCK_TYPES` (a name already taken by another declaration is a ``ValueError``)."""
    known = BLOCK_TYPES.get(block.name)
    if known is not None and known != block:
        raise ValueError(f"block type {block.name!r} is declared already: {known}")
    BLOCK_TYPES[block.name] = block
    return block


def block_type(name: str) -> BlockType:
    """The declaration of block type ``name``; ``ValueError`` naming the known ones otherwise."""
    try:
        return BLOCK_TYPES[name]
    except KeyError:
        raise ValueError(f"block type {name!r} is not declared; known: {list(BLOCK_TYPES)}") from None


register_block_type(BlockType("attn", "Attn", "#CC79A7", "attention", "multiply"))
register_block_type(BlockType("conv", "Conv", "#0072B2", "convolution", "multiply", pool_view="as_is",
                              cnn_family="ResNet"))
register_block_type(BlockType("shift", "Shift", "#E69F00", "convolution", "bitshift", pool_view="power_of_two",
                              defaults={"weight_bits": 5}, cnn_family="DeepShift"))
register_block_type(BlockType("add", "Add", "#009E73", "convolution", "absdiff", pool_view="transform",
                              own_init="unit", prior="laplace", defaults={"eta": 0.2}, needs_output_norm=True,
                              cnn_family="AdderNet"))

BLOCKS: tuple[str, ...] = tuple(BLOCK_TYPES)
#: The convolution-family block types that multiply no more: what ``convert_model`` turns a network into.
MULTIPLICATION_FREE: tuple[str, ...] = tuple(name for name, b in BLOCK_TYPES.items()
                                             if b.family == "convolution" and b.operator != "multiply")
#: The plain multiplying convolution: what a homogeneous baseline falls back on where a stage lacks a block type,
#: and what measured latencies are taken relative to.
REFERENCE_BLOCK: str = next(name for name, b in BLOCK_TYPES.items()
                            if b.family == "convolution" and b.operator == "multiply")
#: The block types that share one weight pool per position (Conv reads it as is, Shift in powers of two, Add via T).
CONV_FAMILY: tuple[str, ...] = tuple(name for name, b in BLOCK_TYPES.items() if b.family == "convolution")
ATTENTION: str = next(name for name, b in BLOCK_TYPES.items() if b.family == "attention")
#: AdderNet's block type, the one whose weights run ``|x - w|``.
ADDER: str = next(name for name, b in BLOCK_TYPES.items() if b.operator == "absdiff")
SEPARATOR = "+"


def multi_branch(conv: str) -> str:
    """The multi-branch block of attention beside the convolution-family block ``conv``: ``"attn+<conv>"``."""
    return f"{ATTENTION}{SEPARATOR}{conv}"


MULTI_BRANCH: tuple[str, ...] = tuple(multi_branch(op) for op in CONV_FAMILY)
#: Paper Table 1: every block type in the encoder, attention (alone or beside a convolution) in the decoder.
ENCODER_BLOCKS: tuple[str, ...] = (ATTENTION, *MULTI_BRANCH, *CONV_FAMILY)
DECODER_BLOCKS: tuple[str, ...] = (ATTENTION, *MULTI_BRANCH)


def branches(block: str) -> tuple[str | None, str | None]:
    """``(attention, convolution)`` branches of a block name: ``"attn"`` -> ``("attn", None)``, ``"add"`` ->
    ``(None, "add")``, ``"attn+shift"`` -> ``("attn", "shift")``; ``ValueError`` for a name outside the vocabulary."""
    if block == ATTENTION:
        return ATTENTION, None
    if block in CONV_FAMILY:
        return None, block
    if block in MULTI_BRANCH:
        return ATTENTION, block.split(SEPARATOR, 1)[1]
    raise ValueError(f"block: unknown type {block!r}; expected one of {list(ENCODER_BLOCKS)}")
