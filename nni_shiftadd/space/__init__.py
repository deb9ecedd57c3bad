"""Search spaces: the YAML schema of CV hybrid spaces, the architecture dicts that sample them, and the supernet
(``nni_shiftadd.space.cv.HybridCVSpace``, an NNI ``ModelSpace``; imported on demand because it loads NNI)."""
from .spec import (OPS, ClassifierSpec, InputSpec, LayerPlan, SpaceSpec, StageSpec, StemSpec, arch_gates,
                   arch_space, baseline_arch, canonical_arch, count_subnets, depth_label, layer_plan, load_space,
                   op_label, random_arch, shipped_spaces, valid_depths, validate_arch)

__all__ = ["OPS", "ClassifierSpec", "InputSpec", "LayerPlan", "SpaceSpec", "StageSpec", "StemSpec", "arch_gates",
           "arch_space", "baseline_arch", "canonical_arch", "count_subnets", "depth_label", "layer_plan",
           "load_space", "op_label", "random_arch", "shipped_spaces", "valid_depths", "validate_arch"]
