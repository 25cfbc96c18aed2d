"""Tools that run beside the system, never inside a serving or training process.

- `bench`: benchmarks of the table, the retrieval index, the trainer and a running ranker;
- `evaluation`: the prequential MovieLens evaluation against its baselines;
- `data`: MovieLens-100K, synthetic streams, and the HTTP replay client for ingest.

They take URLs and configs, start no process, and import the runtime core; the runtime core
never imports them (`tests/unit/test_layout.py` checks it).
"""
