"""Toy sequence tasks and batching for the experiments."""
from .tasks import BOS, EOS, PAD, AdditionTask, ReverseTask

__all__ = ["ReverseTask", "AdditionTask", "PAD", "BOS", "EOS"]
