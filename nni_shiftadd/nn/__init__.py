"""Blocks and NNI mutables of the hybrid search space: the Attn block, the hybrid layer choice whose
Conv/Shift/Add candidates share weights (``HybridChoice``), with its one-shot forms for NNI's one-shot strategies
(``oneshot_hooks``), and the BatchNorm recalibration of subnets taken from a supernet. The translation space's
blocks are the SuperTransformer's (:mod:`.transformer`)."""
from .attention import AttnBlock
from .hybrid import CANDIDATES, Bottleneck, HybridBlock, HybridChoice
from .oneshot import HybridCandidate, HybridSuperNet, oneshot_hooks
from .recalibration import BatchNormRecalibration, recalibrate_batchnorm

__all__ = ["CANDIDATES", "AttnBlock", "BatchNormRecalibration", "Bottleneck", "HybridBlock", "HybridCandidate",
           "HybridChoice", "HybridSuperNet", "oneshot_hooks",
           "recalibrate_batchnorm"]
