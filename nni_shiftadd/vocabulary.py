"""The block vocabulary of ShiftAddNAS, in one place: the four block types, which of them share a weight pool, and the
multi-branch names of the translation space.

``attn`` is multiplication-based attention; ``conv``, ``shift`` and ``add`` are the convolution family (a
multiplication, a power-of-two weight, AdderNet's ``-|x - w|``), which share one weight pool per position under
heterogeneous weight sharing. A multi-branch block ``"attn+conv"`` runs attention on one half of the channels and
the named convolution on the other (paper Sec. 3.1, Table 1).
"""
from __future__ import annotations

BLOCKS: tuple[str, ...] = ("attn", "conv", "shift", "add")
#: The block types that share one weight pool per position (Conv reads it as is, Shift in powers of two, Add via T).
CONV_FAMILY: tuple[str, ...] = ("conv", "shift", "add")
SEPARATOR = "+"
MULTI_BRANCH: tuple[str, ...] = tuple(f"attn{SEPARATOR}{op}" for op in CONV_FAMILY)
#: Paper Table 1: every block type in the encoder, attention (alone or beside a convolution) in the decoder.
ENCODER_BLOCKS: tuple[str, ...] = ("attn", *MULTI_BRANCH, *CONV_FAMILY)
DECODER_BLOCKS: tuple[str, ...] = ("attn", *MULTI_BRANCH)


def branches(block: str) -> tuple[str | None, str | None]:
    """``(attention, convolution)`` branches of a block name: ``"attn"`` -> ``("attn", None)``, ``"add"`` ->
    ``(None, "add")``, ``"attn+shift"`` -> ``("attn", "shift")``; ``ValueError`` for a name outside the vocabulary."""
    if block == "attn":
        return "attn", None
    if block in CONV_FAMILY:
        return None, block
    if block in MULTI_BRANCH:
        return "attn", block.split(SEPARATOR, 1)[1]
    raise ValueError(f"block: unknown type {block!r}; expected one of {list(ENCODER_BLOCKS)}")
