"""The trainer's configuration: what a process sets, and what `OnlineTrainer` is given.

`TrainerOptions` holds the knobs a deployment tunes; the trainer process nests it in its
settings (`FRESHREC_TRAINER__<FIELD>`). `TrainerConfig` adds what the process derives
rather than reads: the dense model's shape (from the table config), the compute threads
(shared by every process) and how events become examples (its own settings section).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from freshrec.models.model import ModelConfig
from freshrec.training.examples import ExampleConfig

__all__ = ["TrainerConfig", "TrainerOptions"]


class TrainerOptions(BaseModel):
    """Knobs of the online trainer."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    group: str = Field(
        "freshrec-trainer",
        min_length=1,
        description="Consumer group id; also names the offsets and checkpoint keys in Redis.",
    )
    member: str = Field(
        "",
        pattern=r"^[A-Za-z0-9_.-]{0,64}$",
        description="This trainer's name among several in one consumer group (e.g. the pod "
        "name; also set FRESHREC_CONSUMER__GROUP_INSTANCE_ID). Set, the trainer keeps its own "
        "checkpoint and commit record and fences its partitions' offsets; empty: the group's "
        "only trainer (docs/scaling.md).",
    )
    dense_lr: float = Field(0.003, gt=0, description="Adam learning rate of dense parameters.")
    retrieval_weight: float = Field(
        1.0,
        ge=0,
        description="Weight of the retrieval head's sampled-softmax loss (interactions) "
        "against the ranking head's logistic loss (preferences).",
    )
    retrieval_negatives: int = Field(
        128,
        ge=0,
        le=10_000,
        description="Items drawn per batch, uniformly from the recently seen items, as extra "
        "negatives of the retrieval softmax (beside the batch's own items).",
    )
    replay_capacity: int = Field(
        20_000,
        ge=1,
        description="Recent interactions kept for replay (16 bytes each in Redis).",
    )
    replay_samples: int = Field(
        32,
        ge=0,
        le=10_000,
        description="Earlier interactions drawn per batch from the replay ring as extra "
        "positives of the retrieval softmax (0: no replay).",
    )
    frequency_buckets: int = Field(
        65_536,
        ge=1,
        description="Hash buckets of the streaming item-frequency estimate behind the logQ "
        "correction (16 bytes each in Redis).",
    )
    frequency_alpha: float = Field(
        0.05,
        gt=0,
        le=1,
        description="Moving-average rate of the item-frequency estimate (memory of about "
        "1/alpha occurrences of an item).",
    )
    publish_interval_s: float = Field(
        2.0,
        ge=0,
        description="How often the dense model is published for serving (0: with every batch).",
    )
    expire_every_batches: int = Field(
        100, ge=1, description="Event-time expiry runs before every n-th batch."
    )
    max_message_bytes: int = Field(
        65536, ge=256, description="Larger messages go to the dead-letter topic."
    )
    stats_interval_s: float = Field(
        5.0, gt=0, description="How often table sizes and AUC are refreshed for the metrics."
    )
    dedup_window: int = Field(
        100_000,
        ge=1,
        description="Messages per partition whose event ids are remembered: a copy of an event "
        "(a producer's retry) arriving within this many messages of its partition is skipped. "
        "Costs 8 bytes per message in Redis and about 100 bytes in the trainer.",
    )


class TrainerConfig(TrainerOptions):
    """Everything `OnlineTrainer` is configured with."""

    compute_threads: int = Field(
        1,
        ge=1,
        description="PyTorch, BLAS and OpenMP threads of this process (`limit_compute_threads`; "
        "the model is small: one thread is fastest and avoids spinning thread pools).",
    )
    model: ModelConfig = Field(default_factory=ModelConfig, description="Dense model shape.")
    examples: ExampleConfig = Field(
        default_factory=ExampleConfig, description="How events become examples."
    )
