"""Cost models as NNI profilers: #Mult/#Add/#Shift accounting, the Eyeriss energy/latency model and a latency
predictor. ``profile(model, *inputs)`` is the entry point everything else builds on."""
from .counts import OpCounts, count_layer, count_ops, effective_macs
from .eyeriss import EyerissConfig, LayerCost, Mapping, layer_cost, mapping_cost
from .layers import LayerRecord, LayerShape
from .profile import CostReport, LayerRow, eyeriss_config, profile, report_from_records
from .trace import Trace, trace_layers

_LAZY = {"EyerissProfiler": "profilers", "OpCountProfiler": "profilers", "LatencyPredictor": "predictor",
         "ArchEncoder": "encoding", "CostExpressionProfiler": "expression", "DifferentiableCostPenalty": "expression"}


def __getattr__(name: str):  # NNI and the predictor load only when used (importing nni is slow)
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["ArchEncoder", "CostExpressionProfiler", "DifferentiableCostPenalty", "EyerissProfiler", "LatencyPredictor", "OpCountProfiler", "CostReport", "EyerissConfig", "LayerCost", "LayerRecord", "LayerRow", "LayerShape", "Mapping", "OpCounts", "Trace",
           "count_layer", "count_ops", "effective_macs", "eyeriss_config", "layer_cost", "mapping_cost", "profile",
           "report_from_records", "trace_layers"]
