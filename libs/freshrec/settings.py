"""Settings every freshrec process shares; each process subclasses `CommonSettings`.

Values come from `FRESHREC_*` environment variables (or a `.env` file named by
`FRESHREC_ENV_FILE`). Settings objects are created once in a process's entry point and passed
down; nothing reads the environment at import time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Self, get_args, get_origin

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from freshrec.table.backends import (
    RedisBackendConfig,
    RedisClusterBackendConfig,
    redis_backend_config,
)

__all__ = ["CommonSettings", "default_table_config_path"]


def default_table_config_path() -> Path:
    """The table definitions shipped with the package."""
    return Path(__file__).with_name("tables.yaml")


class CommonSettings(BaseSettings):
    """Connection and naming settings shared by ingest, trainer and ranker."""

    # nested models (a process's backend or index config) read `FRESHREC_<FIELD>__<SUBFIELD>`
    model_config = SettingsConfigDict(
        env_prefix="FRESHREC_", env_nested_delimiter="__", extra="ignore"
    )

    redis_url: str = Field(
        "redis://127.0.0.1:6379/0", description="Redis holding the table, offsets and models."
    )
    redis_cluster_nodes: str = Field(
        "",
        description="Redis Cluster startup nodes (host:port, comma-separated); when set, the "
        "table, offsets and models live on the cluster instead of `redis_url` "
        "(docs/scaling.md).",
    )
    redis_cluster_shards: int = Field(
        12,
        ge=1,
        le=1024,
        description="Shards per table on the Redis Cluster; part of the key layout, so "
        "changing it needs a snapshot restore.",
    )
    redis_wait_replicas: int = Field(
        0,
        ge=0,
        le=16,
        description="On the Redis Cluster, replicas every commit waits for (WAIT) before it "
        "counts; 0 trusts asynchronous replication (a failover can lose the last commits).",
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
    body_timeout_s: float = Field(
        10.0,
        gt=0,
        description="A request body must arrive whole within this long; a slower one is "
        "answered 408 and its connection closed.",
    )
    compute_threads: int = Field(
        1,
        ge=1,
        le=64,
        description="Compute threads per process: PyTorch, BLAS (numpy) and OpenMP (FAISS) "
        "(small models: 1 is fastest, and idle BLAS threads spin on the other cores).",
    )

    @field_validator("api_keys", mode="before")
    @classmethod
    def _split_keys(cls, value: object) -> object:
        if isinstance(value, str):
            return [k.strip() for k in value.split(",") if k.strip()]
        return value

    events_topic: str = Field(
        "",
        pattern=r"^[A-Za-z0-9_.-]{0,200}$",
        description="Kafka topic of events; empty means `<namespace>.events`.",
    )
    dead_letter_topic: str = Field(
        "",
        pattern=r"^[A-Za-z0-9_.-]{0,200}$",
        description="Kafka topic of unusable messages; empty means `<namespace>.events.dlq`.",
    )

    @model_validator(mode="after")
    def _default_topics(self) -> Self:
        if not self.events_topic:
            self.events_topic = f"{self.namespace}.events"
        if not self.dead_letter_topic:
            self.dead_letter_topic = f"{self.namespace}.events.dlq"
        return self

    def table_backend(
        self, socket_timeout_s: float | None = None
    ) -> RedisBackendConfig | RedisClusterBackendConfig:
        """The table backend these settings name: the Redis Cluster at `redis_cluster_nodes`
        when set, else Redis at `redis_url`; keys under `namespace`.

        Args:
            socket_timeout_s: per-command socket timeout (None: wait as long as it takes).
        """
        return redis_backend_config(
            self.redis_url,
            self.namespace,
            cluster_nodes=self.redis_cluster_nodes,
            shards=self.redis_cluster_shards,
            wait_replicas=self.redis_wait_replicas,
            socket_timeout_s=socket_timeout_s,
        )


def _kind(annotation: object) -> str:
    kind = getattr(annotation, "__name__", str(annotation))
    return kind.replace("typing.", "").replace("|", "\\|")


def _shown(name: str, default: object) -> str:
    if name == "table_config":
        default = "bundled libs/freshrec/tables.yaml"
    elif isinstance(default, list):
        default = ",".join(str(v) for v in default) or "(empty)"
    elif isinstance(default, BaseModel):
        default = getattr(default, "type", type(default).__name__)
    return "(derived)" if default == "" else f"`{default}`"


def _variants(annotation: object) -> list[type[BaseModel]]:
    """The models a nested field may hold: one model, or each member of a (tagged) union."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    args = get_args(annotation)
    if args and get_origin(annotation) is Annotated:
        return _variants(args[0])
    return [a for a in args if isinstance(a, type) and issubclass(a, BaseModel)]


def _variants_note(variants: list[type[BaseModel]], sub: str, default: object) -> str:
    """`(ivf, split only; split: 16) `: the variants that have field `sub`, and those whose
    default differs from the first's."""
    having = [v for v in variants if sub in v.model_fields and "type" in v.model_fields]
    names = [str(v.model_fields["type"].default) for v in having]
    others = [
        f"{name}: {_shown(sub, v.model_fields[sub].get_default(call_default_factory=True))}"
        for name, v in zip(names, having, strict=True)
        if v.model_fields[sub].get_default(call_default_factory=True) != default
    ]
    return f"({', '.join(names)} only{''.join('; ' + o for o in others)}) " if names else ""


def _field_rows(env: str, name: str, field: FieldInfo) -> list[str]:
    variants = _variants(field.annotation)
    default = field.get_default(call_default_factory=True)
    if not variants:
        return [
            f"| `{env}` | {_kind(field.annotation)} | {_shown(name, default)} | "
            f"{field.description or ''} |"
        ]
    rows: list[str] = []
    tagged = len(variants) > 1
    seen: set[str] = set()
    for variant in variants:
        for sub, subfield in variant.model_fields.items():
            sub_env = f"{env}__{sub.upper()}"
            if sub_env in seen:
                continue
            seen.add(sub_env)
            if tagged and sub == "type":
                choices = ", ".join(str(v.model_fields["type"].default) for v in variants)
                text = f"{field.description or ''} One of: {choices}."
                rows.append(f"| `{sub_env}` | str | {_shown(name, default)} | {text} |")
                continue
            sub_default = subfield.get_default(call_default_factory=True)
            only = _variants_note(variants, sub, sub_default) if tagged else ""
            rows.append(
                f"| `{sub_env}` | {_kind(subfield.annotation)} | {_shown(sub, sub_default)} | "
                f"{only}{subfield.description or ''} |"
            )
    return rows


def settings_markdown(sections: dict[str, type[BaseSettings]]) -> str:
    """A markdown table per settings class: variable, type, default, description.

    A nested model (or a tagged union of models) is listed field by field as
    `FRESHREC_<FIELD>__<SUBFIELD>`.

    Args:
        sections: heading → settings class (fields shared with an earlier class are listed
            once, under the first heading).
    """
    seen: set[str] = set()
    lines: list[str] = []
    for heading, cls in sections.items():
        rows = []
        for name, field in cls.model_fields.items():
            if name in seen:
                continue
            seen.add(name)
            rows += _field_rows(f"FRESHREC_{name.upper()}", name, field)
        if rows:
            lines += [f"## {heading}", "", "| variable | type | default | meaning |"]
            lines += ["| --- | --- | --- | --- |", *rows, ""]
    return "\n".join(lines)
