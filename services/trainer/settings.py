"""Trainer settings (`FRESHREC_*` environment variables)."""

from __future__ import annotations

from pydantic import Field

from freshrec.settings import CommonSettings

__all__ = ["TrainerSettings"]


class TrainerSettings(CommonSettings):
    """Everything the trainer process can be told."""

    trainer_host: str = Field("127.0.0.1", description="Metrics/health HTTP bind address.")
    trainer_port: int = Field(8002, ge=0, le=65535, description="Metrics/health HTTP port.")
    trainer_group: str = Field("freshrec-trainer", description="Kafka consumer group id.")
    batch_size: int = Field(1024, ge=1, le=65536, description="Messages per micro-batch.")
    max_batch_wait_s: float = Field(
        0.1, gt=0, le=30, description="Train a partial batch after waiting this long."
    )
    publish_interval_s: float = Field(
        2.0, gt=0, description="How often the dense model is published for serving."
    )
    expire_every_batches: int = Field(
        100, ge=1, description="Event-time expiry runs before every n-th batch."
    )
    dense_lr: float = Field(0.003, gt=0, description="Adam learning rate of dense parameters.")
    positive_rating: float = Field(4.0, description="Ratings at or above are positives.")
    join_window_s: float = Field(
        600.0, gt=0, description="Event-time window an impression waits for its action."
    )
    negative_keep_rate: float = Field(
        1.0, gt=0, le=1, description="Share of unanswered impressions kept as negatives."
    )
    sampled_negatives: int = Field(
        2, ge=0, le=100, description="Negatives sampled per positive-only action."
    )
    max_message_bytes: int = Field(
        65536, ge=256, description="Larger messages go to the dead-letter topic."
    )
    events_topic_partitions: int = Field(
        4, ge=1, description="Partitions of the events topic when the trainer creates it."
    )
    session_timeout_ms: int = Field(
        10_000, ge=6000, description="Kafka group session timeout of the trainer."
    )
    reader_process: bool = Field(
        True,
        description="Fetch and parse Kafka records in a child process (a second core); false "
        "keeps everything in one process.",
    )
    start_from_beginning: bool = Field(
        True, description="Partitions without stored offsets start at the earliest message."
    )
