"""Settings every freshrec process shares; each process subclasses `CommonSettings`.

Values come from `FRESHREC_*` environment variables (or a `.env` file named by
`FRESHREC_ENV_FILE`). Settings objects are created once in a process's entry point and passed
down; nothing reads the environment at import time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

__all__ = ["CommonSettings", "default_table_config_path"]


def default_table_config_path() -> Path:
    """The table definitions shipped with the package."""
    return Path(__file__).with_name("tables.yaml")


class CommonSettings(BaseSettings):
    """Connection and naming settings shared by ingest, trainer and ranker."""

    model_config = SettingsConfigDict(env_prefix="FRESHREC_", extra="ignore")

    redis_url: str = Field(
        "redis://127.0.0.1:6379/0", description="Redis holding the table, offsets and models."
    )
    kafka_bootstrap: str = Field("127.0.0.1:9092", description="Kafka bootstrap servers.")
    namespace: str = Field(
        "freshrec",
        pattern=r"^[A-Za-z0-9_.-]{1,64}$",
        description="Prefix of every Redis key and Kafka topic this deployment owns.",
    )
    table_config: Path = Field(
        default_factory=default_table_config_path,
        description="YAML file defining the embedding tables.",
    )
    api_keys: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated API keys; empty disables authentication.",
    )
    log_level: str = Field("INFO", description="Python logging level.")

    @field_validator("api_keys", mode="before")
    @classmethod
    def _split_keys(cls, value: object) -> object:
        if isinstance(value, str):
            return [k.strip() for k in value.split(",") if k.strip()]
        return value

    @property
    def events_topic(self) -> str:
        """Kafka topic the ingest service produces to."""
        return f"{self.namespace}.events"

    @property
    def dead_letter_topic(self) -> str:
        """Kafka topic that receives messages the trainer cannot use."""
        return f"{self.namespace}.events.dlq"
