"""Online training: events to examples, micro-batches to atomically committed rows."""

from freshrec.training.auc import StreamingAuc, auc
from freshrec.training.examples import Example, ExampleBuilder, ExampleConfig
from freshrec.training.loop import LoopConfig, TrainingLoop
from freshrec.training.trainer import (
    PUBLISHED_MODEL_KEY,
    PUBLISHED_VERSION_KEY,
    BatchReport,
    DeadLetterSink,
    Message,
    OnlineTrainer,
    TrainerConfig,
    checkpoint_key,
    context_ids,
    load_published_dense,
)

__all__ = [
    "PUBLISHED_MODEL_KEY",
    "PUBLISHED_VERSION_KEY",
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
    "context_ids",
    "load_published_dense",
]
