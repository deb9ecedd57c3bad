"""Models registered in timm's registry (``timm.create_model("shiftadd_resnet20", op="add")``)."""
from .resnet import BasicBlock, SmallResNet, make_conv, shiftadd_resnet8, shiftadd_resnet20

__all__ = ["BasicBlock", "SmallResNet", "make_conv", "shiftadd_resnet8", "shiftadd_resnet20"]
