"""Blocks and NNI mutables of the hybrid search space: the Attn block, the multi-branch NLP block, and the hybrid
layer choice whose Conv/Shift/Add candidates share weights (``HybridChoice``, ``oneshot_hooks``)."""
from .attention import AttnBlock, LightweightConv1d, MultiBranchBlock
from .hybrid import CANDIDATES, Bottleneck, HybridBlock, HybridChoice, HybridSuperNet, oneshot_hooks

__all__ = ["CANDIDATES", "AttnBlock", "Bottleneck", "HybridBlock", "HybridChoice", "HybridSuperNet",
           "LightweightConv1d", "MultiBranchBlock", "oneshot_hooks"]
