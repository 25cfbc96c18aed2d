"""Online training: events to examples, micro-batches to atomically committed rows."""

from freshrec.training.auc import StreamingAuc, auc
from freshrec.training.config import TrainerConfig, TrainerOptions
from freshrec.training.examples import Example, ExampleBuilder, ExampleConfig
from freshrec.training.loop import TrainingLoop
from freshrec.training.trainer import (
    BatchReport,
    DeadLetterSink,
    Message,
    OnlineTrainer,
    checkpoint_key,
)

__all__ = [
    "BatchReport",
    "DeadLetterSink",
    "Example",
    "ExampleBuilder",
    "ExampleConfig",
    "Message",
    "OnlineTrainer",
    "StreamingAuc",
    "TrainerConfig",
    "TrainerOptions",
    "TrainingLoop",
    "auc",
    "checkpoint_key",
]
