"""Cost models as NNI profilers: #Mult/#Add/#Shift accounting, the Eyeriss energy/latency model and a latency
predictor. ``profile(model, *inputs)`` is the entry point everything else builds on."""
from .counts import OpCounts, count_layer, count_ops, effective_macs
from .eyeriss import EyerissConfig, LayerCost, layer_cost
from .layers import LayerRecord, LayerShape
from .profile import CostReport, LayerRow, eyeriss_config, profile, report_from_records
from .trace import Trace, trace_layers

__all__ = ["CostReport", "EyerissConfig", "LayerCost", "LayerRecord", "LayerRow", "LayerShape", "OpCounts", "Trace",
           "count_layer", "count_ops", "effective_macs", "eyeriss_config", "layer_cost", "profile",
           "report_from_records", "trace_layers"]
