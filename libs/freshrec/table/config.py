"""Table definitions are data: one validated YAML file lists every table.

Example (`libs/freshrec/tables.yaml` ships the defaults)::

    tables:
      - name: user
        dim: 32
        initializer: {type: normal, std: 0.01, seed: 7}
        optimizer: {type: adagrad, lr: 0.05, initial_accumulator: 0.1}
        expiry: {clock: event, expire_after_s: 2592000}
        admission: {type: counting, min_count: 2}
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import Field, ValidationError, model_validator

from freshrec.config import StrictModel
from freshrec.errors import ConfigError

__all__ = [
    "AdagradConfig",
    "AdamConfig",
    "AdmissionConfig",
    "CountingAdmission",
    "ExpiryConfig",
    "FtrlConfig",
    "InitializerConfig",
    "NoAdmission",
    "OptimizerConfig",
    "ProbabilisticAdmission",
    "SgdConfig",
    "TableConfig",
    "TablesConfig",
    "load_tables",
]


class ZerosInit(StrictModel):
    type: Literal["zeros"] = "zeros"


class UniformInit(StrictModel):
    type: Literal["uniform"] = "uniform"
    scale: float = Field(0.01, gt=0, description="Values drawn from U(-scale, scale).")
    seed: int = Field(0, ge=0, description="With the id, fixes each row's initial vector.")


class NormalInit(StrictModel):
    type: Literal["normal"] = "normal"
    std: float = Field(0.01, gt=0, description="Values drawn from N(0, std²).")
    seed: int = Field(0, ge=0, description="With the id, fixes each row's initial vector.")


InitializerConfig = Annotated[ZerosInit | UniformInit | NormalInit, Field(discriminator="type")]


class SgdConfig(StrictModel):
    type: Literal["sgd"] = "sgd"
    lr: float = Field(0.01, gt=0)


class AdagradConfig(StrictModel):
    type: Literal["adagrad"] = "adagrad"
    lr: float = Field(0.01, gt=0)
    initial_accumulator: float = Field(0.0, ge=0)
    eps: float = Field(1e-10, gt=0)


class AdamConfig(StrictModel):
    """Per-row Adam with a per-row step count, as `torch.optim.SparseAdam`."""

    type: Literal["adam"] = "adam"
    lr: float = Field(0.001, gt=0)
    beta1: float = Field(0.9, ge=0, lt=1)
    beta2: float = Field(0.999, ge=0, lt=1)
    eps: float = Field(1e-8, gt=0)


class FtrlConfig(StrictModel):
    """FTRL-Proximal (McMahan et al. 2013), per coordinate."""

    type: Literal["ftrl"] = "ftrl"
    alpha: float = Field(0.05, gt=0)
    beta: float = Field(1.0, ge=0)
    l1: float = Field(0.0, ge=0)
    l2: float = Field(0.0, ge=0)


OptimizerConfig = Annotated[
    SgdConfig | AdagradConfig | AdamConfig | FtrlConfig, Field(discriminator="type")
]


class ExpiryConfig(StrictModel):
    clock: Literal["event", "wall"] = Field(
        "event",
        description="event: rows idle for expire_after_s of data time are removed by expire(); "
        "wall: a Redis TTL refreshed on every write.",
    )
    expire_after_s: float = Field(gt=0)
    buckets: int = Field(
        16,
        ge=1,
        le=1024,
        description="Expiry index buckets per expire_after_s: rows are indexed by the bucket of "
        "their last update, so a wall-clock row lives between expire_after_s and "
        "expire_after_s * (1 + 1/buckets) after its last write.",
    )


class NoAdmission(StrictModel):
    type: Literal["none"] = "none"


class CountingAdmission(StrictModel):
    type: Literal["counting"] = "counting"
    min_count: int = Field(ge=1, description="A row is created on the min_count-th occurrence.")


class ProbabilisticAdmission(StrictModel):
    type: Literal["probabilistic"] = "probabilistic"
    probability: float = Field(gt=0, le=1, description="Each occurrence admits with this p.")
    seed: int = Field(0, ge=0)


AdmissionConfig = Annotated[
    NoAdmission | CountingAdmission | ProbabilisticAdmission, Field(discriminator="type")
]


class TableConfig(StrictModel):
    """One embedding table."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]{0,31}$")
    dim: int = Field(ge=1, le=4096)
    initializer: InitializerConfig = Field(default_factory=NormalInit)
    optimizer: OptimizerConfig = Field(default_factory=AdagradConfig)
    expiry: ExpiryConfig | None = None
    admission: AdmissionConfig = Field(default_factory=NoAdmission)
    layout: Literal["key", "packed"] = Field(
        "key",
        description="How a Redis backend stores the rows: key, one Redis key per row (any "
        "expiry, Redis Cluster); packed, rows grouped into `packed_buckets` small Redis hashes "
        "(about 40 % less memory per row on one server; event-time or no expiry; the server "
        "needs hash-max-listpack-value of at least the encoded row size). See docs/table.md.",
    )
    packed_buckets: int = Field(
        65536,
        ge=1,
        le=2**32,
        description="Number of hashes of a packed table: size it to about the expected rows "
        "/ 16, so each hash stays a small listpack that a lookup scans quickly "
        "(hash-max-listpack-entries, 128 by default, bounds the rows per hash before Redis "
        "converts it to a larger hashtable).",
    )

    @model_validator(mode="after")
    def _packed_expiry(self) -> TableConfig:
        if self.layout == "packed" and self.expiry is not None and self.expiry.clock == "wall":
            raise ValueError(
                "layout packed supports event-time expiry only: a row in a Redis hash has "
                "no TTL of its own (use layout key for wall-clock expiry)"
            )
        return self


class TablesConfig(StrictModel):
    """Every table of a deployment."""

    tables: list[TableConfig] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_names(self) -> TablesConfig:
        names = [t.name for t in self.tables]
        if len(names) != len(set(names)):
            raise ValueError(f"table names must be unique, got {names}")
        return self

    def __getitem__(self, name: str) -> TableConfig:
        for table in self.tables:
            if table.name == name:
                return table
        raise KeyError(name)


def load_tables(path: Path) -> TablesConfig:
    """Read and validate the table definitions file.

    Raises:
        ConfigError: the file is missing, not YAML, or fails validation (naming the field).
    """
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read table config {path}: {exc}") from exc
    try:
        return TablesConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"invalid table config {path}: {exc}") from exc
