"""Retriever configuration: a discriminated union on `type` picks the implementation.

Example (as it would appear in a service's settings, JSON or YAML)::

    retriever: {type: ivf, nprobe: 64}

- `exact`: numpy brute force (`ExactRetriever`), the reference.
- `flat`: FAISS `IndexIDMap2(IndexFlatIP)`, exact; cost grows linearly with the catalog.
- `ivf`: FAISS IVF-flat, approximate; upserts and removals are native, retrained in the
  background when the catalog has grown or shrunk by `retrain_growth` since training, when
  `retrain_churn_fraction` of it was rewritten since, or when a drift check (list
  imbalance, sampled recall probe against a relative drop or an absolute floor) finds the
  centroids stale.
- `hnsw`: FAISS HNSW-flat, approximate; removals are tombstones filtered at search time,
  compacted by a background rebuild once `max_dead_fraction` of the graph is dead.
- `split`: the `head_fraction` of items of largest norm searched exactly, the rest by
  IVF-flat with a small `nprobe`, answers merged by score; approximate; upserts and
  removals are native, rebuilt in the background when the catalog or the head has grown or
  shrunk past its bound. For trained catalogs, whose best answers are the large rows.

`freshrec.retrieval.factory.build_retriever` turns a config into a retriever; this module
imports no index implementation, so reading a config does not load FAISS.

See `docs/retrieval.md` for the trade-offs and measured figures.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from freshrec.config import StrictModel

__all__ = [
    "ExactConfig",
    "FaissIndexConfig",
    "FlatConfig",
    "HnswConfig",
    "IvfConfig",
    "RetrieverConfig",
    "SplitConfig",
]


class ExactConfig(StrictModel):
    """Numpy brute force."""

    type: Literal["exact"] = "exact"


class FlatConfig(StrictModel):
    """FAISS exact inner-product index."""

    type: Literal["flat"] = "flat"


class IvfConfig(StrictModel):
    """FAISS IVF-flat: items bucketed by nearest centroid; a query scans `nprobe` buckets."""

    type: Literal["ivf"] = "ivf"
    nlist: int | None = Field(
        None,
        ge=1,
        description="Number of buckets; None picks about 4*sqrt(N) at each (re)training.",
    )
    nprobe: int = Field(64, ge=1, description="Buckets scanned per query (recall vs speed).")
    min_train_size: int = Field(
        20_000,
        ge=1,
        description="Below this many items the index stays exact (flat): IVF needs enough "
        "points per centroid to train, and brute force is fast at this size anyway.",
    )
    retrain_growth: float = Field(
        2.0,
        gt=1.0,
        description="Retrain in the background once the catalog is this many times larger "
        "(or smaller) than when the centroids were trained.",
    )
    train_iterations: int = Field(10, ge=1, description="k-means iterations per training.")
    train_points_per_list: int = Field(
        64, ge=39, description="k-means sample size per centroid (bounds training time)."
    )
    drift_check_fraction: float = Field(
        0.01,
        ge=0.0,
        description="Check the live index for drift (list imbalance, recall probe) each time "
        "this fraction of the trained size has been upserted or removed; 0 turns the checks "
        "off.",
    )
    max_imbalance_growth: float = Field(
        1.5,
        gt=1.0,
        description="Retrain in the background when the IVF list imbalance factor has grown "
        "to this many times its value right after training (items crowd into few lists).",
    )
    probe_queries: int = Field(
        64,
        ge=0,
        le=4096,
        description="Recent real queries kept (one per search call) for the recall probe of "
        "each drift check; 0 turns the probe off.",
    )
    probe_k: int = Field(100, ge=1, description="k of the drift check's recall probe.")
    max_recall_drop: float = Field(
        0.03,
        gt=0.0,
        lt=1.0,
        description="Retrain in the background when the probe's recall@probe_k (against an "
        "exact scan of every list) has fallen this much below the first probe after the last "
        "training. Relative, so that an nprobe too small for the data does not retrain in a "
        "loop: only drift does.",
    )
    min_probe_recall: float = Field(
        0.0,
        ge=0.0,
        lt=1.0,
        description="Retrain in the background when the probe's recall@probe_k is under "
        "this floor, or will be one training time from now on its fall since the first probe "
        "after training (0: no floor). Set it between the recall you need and what nprobe "
        "reaches right after training. A floor retrain whose first probe is still under the "
        "floor suspends the floor (nprobe is too small, a warning says so) until a probe "
        "reaches it again; max_recall_drop keeps watching meanwhile.",
    )
    retrain_churn_fraction: float = Field(
        0.25,
        ge=0.0,
        description="Retrain in the background once this fraction of the trained size has "
        "been upserted or removed since the last training, whatever the checks measure "
        "(centroids trained on a catalog that has since been rewritten); 0 turns it off.",
    )


class HnswConfig(StrictModel):
    """FAISS HNSW-flat graph index; removals are tombstones until the next rebuild."""

    type: Literal["hnsw"] = "hnsw"
    m: int = Field(32, ge=4, le=256, description="Graph degree (memory and recall).")
    ef_construction: int = Field(40, ge=8, description="Candidate list size while inserting.")
    ef_search: int = Field(256, ge=1, description="Candidate list size per query.")
    max_dead_fraction: float = Field(
        0.2,
        gt=0.0,
        lt=1.0,
        description="Rebuild in the background once this fraction of graph nodes is "
        "tombstones (removed or replaced items).",
    )


class SplitConfig(StrictModel):
    """Norm split: the largest-norm items in an exact flat head, the rest in IVF-flat."""

    type: Literal["split"] = "split"
    head_fraction: float = Field(
        0.02,
        gt=0.0,
        lt=1.0,
        description="Share of the items, those of largest norm, searched exactly; the norm "
        "threshold is fixed at each (re)build and routes every upsert.",
    )
    nprobe: int = Field(
        16, ge=1, description="IVF lists of the tail (the other items) scanned per query."
    )
    nlist: int | None = Field(
        None,
        ge=1,
        description="IVF lists of the tail; None picks about 4*sqrt(tail size) at each build.",
    )
    min_train_size: int = Field(
        20_000,
        ge=1,
        description="Below this many items the index stays exact (flat), as `ivf` does.",
    )
    retrain_growth: float = Field(
        2.0,
        gt=1.0,
        description="Rebuild in the background once the catalog is this many times larger "
        "(or smaller) than at the last build.",
    )
    max_head_growth: float = Field(
        1.5,
        gt=1.0,
        description="Rebuild in the background (a new norm threshold) once the head holds "
        "this many times more (or fewer) items than right after the last build: norms "
        "have moved.",
    )
    train_iterations: int = Field(10, ge=1, description="k-means iterations of the tail.")
    train_points_per_list: int = Field(
        64, ge=39, description="k-means sample size per tail centroid."
    )


FaissIndexConfig = Annotated[
    FlatConfig | IvfConfig | HnswConfig | SplitConfig, Field(discriminator="type")
]
RetrieverConfig = Annotated[
    ExactConfig | FlatConfig | IvfConfig | HnswConfig | SplitConfig, Field(discriminator="type")
]
