"""Initial vectors depend on (seed, id, column) only, and have the configured distribution."""

from __future__ import annotations

import numpy as np

from freshrec.table.config import NormalInit, UniformInit, ZerosInit
from freshrec.table.initializers import initial_vectors


def test_same_id_same_vector_whatever_the_batch() -> None:
    config = NormalInit(std=0.1, seed=3)
    ids = np.array([5, 2**63 + 9, 2**64 - 1], dtype=np.uint64)
    alone = initial_vectors(config, ids[1:2], 16)
    batch = initial_vectors(config, ids, 16)
    assert batch.dtype == np.float32 and batch.shape == (3, 16)
    np.testing.assert_array_equal(batch[1:2], alone)
    np.testing.assert_array_equal(initial_vectors(config, ids[::-1], 16)[::-1], batch)
    other_seed = initial_vectors(NormalInit(std=0.1, seed=4), ids, 16)
    assert not np.allclose(other_seed, batch)
    assert len({row.tobytes() for row in batch}) == 3


def test_normal_initializer_statistics() -> None:
    ids = np.arange(20_000, dtype=np.uint64) * np.uint64(2**33 + 1)
    v = initial_vectors(NormalInit(std=0.05, seed=1), ids, 8).astype(np.float64)
    assert abs(v.mean()) < 0.002
    assert abs(v.std() - 0.05) < 0.001
    # Columns are not copies of each other.
    assert abs(np.corrcoef(v[:, 0], v[:, 1])[0, 1]) < 0.03
    within_2sd = (np.abs(v) < 0.1).mean()
    assert abs(within_2sd - 0.9545) < 0.01


def test_uniform_and_zeros_initializers() -> None:
    ids = np.arange(10_000, dtype=np.uint64)
    u = initial_vectors(UniformInit(scale=0.2, seed=0), ids, 4)
    assert -0.2 <= u.min() < -0.19 and 0.19 < u.max() <= 0.2
    assert abs(u.mean()) < 0.005
    z = initial_vectors(ZerosInit(), ids, 4)
    assert z.shape == (10_000, 4) and not z.any()
