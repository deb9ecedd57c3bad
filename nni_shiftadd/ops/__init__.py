"""Hybrid operators: Add (AdderNet) and Shift (DeepShift) layers, and a converter for whole models."""
from .adder import (AdderConv1d, AdderConv2d, AdderFunction, AdderLinear, adaptive_lr_scale, adder_conv1d,
                    adder_conv2d, adder_linear)
from .convert import convert_model, default_exclusions
from .quantize import round_fixed_point, round_power_of_two, shift_range, shift_sign_weight
from .shift import ShiftConv2d, ShiftLinear, shift_conv1d, shift_linear

__all__ = ["AdderConv1d", "AdderConv2d", "AdderFunction", "AdderLinear", "ShiftConv2d", "ShiftLinear",
           "adaptive_lr_scale", "adder_conv1d", "adder_conv2d", "adder_linear", "convert_model",
           "default_exclusions", "round_fixed_point", "round_power_of_two", "shift_conv1d", "shift_linear",
           "shift_range", "shift_sign_weight"]
