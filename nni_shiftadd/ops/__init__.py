"""Hybrid operators: Add (AdderNet) and Shift (DeepShift) layers, and a converter for whole models."""
from .adder import (AdderConv1d, AdderConv2d, AdderFunction, AdderLinear, adaptive_lr_scale, adder_conv1d,
                    adder_conv2d, adder_linear)

__all__ = ["AdderConv1d", "AdderConv2d", "AdderFunction", "AdderLinear", "adaptive_lr_scale", "adder_conv1d",
           "adder_conv2d", "adder_linear"]
