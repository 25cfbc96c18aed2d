"""Trainer settings (`FRESHREC_*` environment variables).

The library's config models are nested as they are: `FRESHREC_TRAINER__<FIELD>`
(`TrainerOptions`), `FRESHREC_EXAMPLES__<FIELD>` (`ExampleConfig`) and
`FRESHREC_CONSUMER__<FIELD>` (`KafkaSourceConfig`).
"""

from __future__ import annotations

from pydantic import Field

from freshrec.settings import CommonSettings
from freshrec.stream.consumer import KafkaSourceConfig
from freshrec.training import ExampleConfig, TrainerOptions

__all__ = ["TrainerSettings"]


class TrainerSettings(CommonSettings):
    """Everything the trainer process can be told."""

    trainer_host: str = Field("127.0.0.1", description="Metrics/health HTTP bind address.")
    trainer_port: int = Field(8002, ge=0, le=65535, description="Metrics/health HTTP port.")
    batch_size: int = Field(
        1024,
        ge=1,
        le=65536,
        description="Messages per micro-batch (also the most records one fetch hands back).",
    )
    max_batch_wait_s: float = Field(
        0.1, gt=0, le=30, description="Train a partial batch after waiting this long."
    )
    events_topic_partitions: int = Field(
        4, ge=1, description="Partitions of the events topic when the trainer creates it."
    )
    trainer: TrainerOptions = Field(
        default_factory=TrainerOptions, description="Online trainer knobs."
    )
    examples: ExampleConfig = Field(
        default_factory=ExampleConfig, description="How events become examples."
    )
    consumer: KafkaSourceConfig = Field(
        default_factory=KafkaSourceConfig, description="Kafka consumer knobs."
    )
