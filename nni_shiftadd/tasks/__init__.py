"""Tasks: image classification (timm data and models, Lightning training)."""
from .classification import ClassificationTask, TrainConfig, build_model, train

__all__ = ["ClassificationTask", "TrainConfig", "build_model", "train"]
