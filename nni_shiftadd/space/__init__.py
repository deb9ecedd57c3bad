"""Search spaces: the YAML schema of CV hybrid spaces and the architecture dicts that sample them."""
from .spec import (OPS, ClassifierSpec, InputSpec, LayerPlan, SpaceSpec, StageSpec, StemSpec, arch_gates,
                   arch_space, baseline_arch, canonical_arch, count_subnets, depth_label, layer_plan, load_space,
                   op_label, random_arch, shipped_spaces, valid_depths, validate_arch)

__all__ = ["OPS", "ClassifierSpec", "InputSpec", "LayerPlan", "SpaceSpec", "StageSpec", "StemSpec", "arch_gates",
           "arch_space", "baseline_arch", "canonical_arch", "count_subnets", "depth_label", "layer_plan",
           "load_space", "op_label", "random_arch", "shipped_spaces", "valid_depths", "validate_arch"]
