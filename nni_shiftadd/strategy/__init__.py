"""Evolution search under hardware constraints (HAT style) and its NNI front ends: an NNI tuner for
``nnictl create`` (:mod:`.tuner`) and an NNI 3.0 strategy for ``NasExperiment`` (:mod:`.nas`)."""
from ..cost.metrics import CONSTRAINT_METRICS, Bound, space_cost_fn
from .evolution import ConstraintError, Evolution, EvolutionConfig, arch_key, load_preset

__all__ = ["CONSTRAINT_METRICS", "Bound", "ConstraintError", "Evolution", "EvolutionConfig", "arch_key",
           "load_preset", "space_cost_fn"]
