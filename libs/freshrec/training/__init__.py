"""Online training: events to examples, micro-batches to atomically committed rows."""

from freshrec.training.auc import StreamingAuc, auc
from freshrec.training.examples import Example, ExampleBuilder, ExampleConfig
from freshrec.training.loop import LoopConfig, TrainingLoop
from freshrec.training.trainer import (
    BatchReport,
    DeadLetterSink,
    Message,
    OnlineTrainer,
    TrainerConfig,
    checkpoint_key,
)

__all__ = [
    "BatchReport",
    "DeadLetterSink",
    "Example",
    "ExampleBuilder",
    "ExampleConfig",
    "LoopConfig",
    "Message",
    "OnlineTrainer",
    "StreamingAuc",
    "TrainerConfig",
    "TrainingLoop",
    "auc",
    "checkpoint_key",
]
