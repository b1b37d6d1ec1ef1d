"""Supervised training and evaluation of reconstructors."""

from reconguard.training.evaluation import VolumeMetrics, evaluate, summarize
from reconguard.training.trainer import TrainConfig, train

__all__ = ["TrainConfig", "VolumeMetrics", "evaluate", "summarize", "train"]
