"""Search spaces: the kinds of space and the protocol their specs implement (:mod:`.kinds`), the image schema
(:mod:`.spec`) and the translation schema (:mod:`.nlp_spec`), the architecture dicts that sample them, and the
supernets (``nni_shiftadd.space.cv.HybridCVSpace``, ``nni_shiftadd.space.nlp.HybridNLPSpace``: NNI ``ModelSpace``s,
imported on demand because they load NNI)."""
from .kinds import SPACE_KINDS, SearchSpaceSpec, register_space_kind
from .spec import (OPS, ClassifierSpec, InputSpec, LayerPlan, SpaceSpec, StageSpec, StemSpec, arch_gates,
                   arch_space, baseline_arch, canonical_arch, count_subnets, depth_label, layer_plan, load_space,
                   named_baselines, op_label, random_arch, restrict_blocks, shipped_spaces, structurally_valid,
                   valid_depths, validate_arch)
from . import nlp_spec  # noqa: F401,E402  (registers the translation kind, after the image one)

__all__ = ["OPS", "SPACE_KINDS", "ClassifierSpec", "InputSpec", "LayerPlan", "SearchSpaceSpec", "SpaceSpec",
           "StageSpec", "StemSpec", "arch_gates", "arch_space", "baseline_arch", "canonical_arch", "count_subnets",
           "depth_label", "layer_plan", "load_space", "named_baselines", "op_label", "random_arch",
           "register_space_kind", "restrict_blocks", "shipped_spaces", "structurally_valid", "valid_depths",
           "validate_arch"]
