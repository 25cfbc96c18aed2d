"""`FaissRetriever`: FAISS inner-product indexes that take upserts and removals while serving.

Three structures, picked by the config's `type` (see `freshrec.retrieval.config`), one
module each (`flat.py`, `ivf.py`, `hnsw.py`) behind the `IndexStructure` interface
(`structure.py`); `retriever.py` holds the shared lock, journal and rebuild logic:

- `flat`: `IndexIDMap2(IndexFlatIP)`. Exact. `remove_ids` compacts the flat array
  (O(N) per call), an upsert is remove + add. Searches rank FAISS's stored vectors with
  `freshrec.retrieval.scan` (one matrix product, pruned selection) instead of FAISS's scan.
- `ivf`: `IndexIVFFlat` with the item ids stored natively in the inverted lists and a
  hash-table direct map, so `remove_ids` is O(removed) and an upsert is remove + add. Until
  the catalog reaches `min_train_size` items the index is a `flat` one; after that the
  centroids are (re)trained in the background whenever the catalog has grown or shrunk by
  `retrain_growth` since the last training.
- `hnsw`: `IndexIDMap2(IndexHNSWFlat)`. FAISS cannot delete graph nodes, so a removal (or
  the old copy of an upserted item) becomes a tombstone: its id-map entry is set to -1 and
  an `IDSelectorBitmap` of live nodes filters it out of every search. Once
  `max_dead_fraction` of the nodes are tombstones a background rebuild compacts the graph.

FAISS labels are int64; item ids are uint64 and are reinterpreted bit for bit
(`ids.view(np.int64)` and back), so ids >= 2**63 round-trip exactly. The label -1 means
"no result" to FAISS, hence the reserved id `2**64 - 1`.

Concurrency and background rebuilds are described in `retriever.py`.
"""

from freshrec.retrieval.faiss.retriever import FaissRetriever, RebuildEvent

__all__ = ["FaissRetriever", "RebuildEvent"]
