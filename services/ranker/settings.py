"""Ranker settings (`FRESHREC_*` environment variables)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from freshrec.models.model import DEFAULT_LIKE_WEIGHT
from freshrec.retrieval.config import FaissIndexConfig, FlatConfig
from freshrec.settings import CommonSettings

__all__ = ["RankerSettings"]


class RankerSettings(CommonSettings):
    """Everything the ranker process can be told."""

    ranker_host: str = Field("127.0.0.1", description="HTTP bind address.")
    ranker_port: int = Field(8000, ge=0, le=65535, description="HTTP port.")
    max_k: int = Field(100, ge=1, le=1000, description="Largest k a request may ask for.")
    candidates: int = Field(
        500, ge=10, le=10_000, description="Items retrieval hands to the ranking model."
    )
    like_weight: float = Field(
        DEFAULT_LIKE_WEIGHT,
        ge=0,
        le=10,
        description="Serving order: candidates are sorted by log P(interact) (the retrieval "
        "head, up to a per-user constant) + like_weight * log P(like | interact) (the ranking "
        "head). 0: retrieval alone; 1: the chance of an interaction that is liked.",
    )
    max_batch: int = Field(
        32,
        ge=1,
        le=1024,
        description="Most requests computed together in one batch (requests that arrive while "
        "a batch computes join the next one); more wait in the queue.",
    )
    max_queue: int = Field(
        64, ge=0, description="Requests waiting for the next batch; more are answered 429."
    )
    max_body_bytes: int = Field(
        1024 * 1024, ge=1024, description="Largest request body; larger is answered 413."
    )
    max_exclude: int = Field(1000, ge=0, description="Most exclude_item_ids a request may send.")
    index: FaissIndexConfig = Field(
        FlatConfig(),
        description="FAISS index: flat (exact) or an approximate kind for large catalogs. "
        "ivf's `nprobe` is the lists scanned per query (recall against speed; 64 suits "
        "trained, clustered embeddings; structureless vectors need about 40% of the lists, "
        "see docs/retrieval.md); hnsw's `ef_search` is the beam width per query (recall "
        "against speed); split searches the `head_fraction` of largest-norm items exactly "
        "and the rest by IVF with its `nprobe` (trained catalogs, whose best answers are "
        "the large rows).",
    )
    item_rows: Literal["mirror", "redis"] = Field(
        "mirror",
        description="Where candidates' rows are read: `mirror`, an in-process copy kept by the "
        "index follower (as fresh as the index, no Redis read per candidate), or `redis` "
        "(one MGET of all candidates per batch).",
    )
    index_snapshot: Path | None = Field(
        None, description="Where the index snapshot is kept so a restart does not start empty."
    )
    index_snapshot_interval_s: float = Field(
        60.0, gt=0, description="How often the index snapshot is written."
    )
    sync_interval_s: float = Field(
        0.2, gt=0, description="How often the model version and popularity are checked."
    )
    trainer_url: str = Field(
        "http://127.0.0.1:8002", description="Trainer HTTP base URL, for the status page."
    )
    recommend_requires_key: bool = Field(
        False, description="Require an API key on /v1/recommend too (when keys are set)."
    )
