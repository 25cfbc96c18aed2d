"""Deterministic initial vectors: the same (seed, id) always starts from the same vector.

No random generator state is kept: each value is drawn from a counter-based hash of
(seed, id, column), so a row created on one trainer, on another, or in a replay of history
starts from identical numbers, and an id without a row reads the vector it would start from.

Normal values use Box-Muller on two such uniforms per column.
"""

from __future__ import annotations

import numpy as np

from freshrec.table.config import InitializerConfig, NormalInit, UniformInit, ZerosInit
from freshrec.table.ids import mix64, uniform01
from freshrec.table.records import FloatArray, IdArray

__all__ = ["initial_vectors"]

# Distinct odd constants keep the seed, id and column streams apart.
_SEED_SALT = np.uint64(0x5EED5EED5EED5EED)
_COLUMN_STEP = np.uint64(0x9E3779B97F4A7C15)


def _uniforms(seed: int, ids: IdArray, columns: int) -> np.ndarray:
    """`(U, columns)` float64 uniforms in [0, 1) fixed by (seed, id, column)."""
    seed_key = mix64(np.array([seed], dtype=np.uint64) ^ _SEED_SALT)
    row_key = mix64(ids.astype(np.uint64, copy=False) ^ seed_key)
    counters = (np.arange(1, columns + 1, dtype=np.uint64) * _COLUMN_STEP)[None, :]
    uniforms: np.ndarray = uniform01(mix64(row_key[:, None] + counters))
    return uniforms


def initial_vectors(config: InitializerConfig, ids: IdArray, dim: int) -> FloatArray:
    """The initial vector of each id.

    Args:
        config: the table's initializer.
        ids: `(U,)` uint64.
        dim: the table's dimension `D`.

    Returns:
        `(U, D)` float32.
    """
    n = int(ids.shape[0])
    if isinstance(config, ZerosInit):
        return np.zeros((n, dim), dtype=np.float32)
    if isinstance(config, UniformInit):
        u = _uniforms(config.seed, ids, dim)
        return ((2.0 * u - 1.0) * config.scale).astype(np.float32)
    if isinstance(config, NormalInit):
        u = _uniforms(config.seed, ids, 2 * dim)
        # 1 - u lies in (0, 1], so the log is finite.
        radius = np.sqrt(-2.0 * np.log1p(-u[:, 0::2]))
        normal = radius * np.cos(2.0 * np.pi * u[:, 1::2])
        vectors: FloatArray = (normal * config.std).astype(np.float32)
        return vectors
    raise TypeError(f"unknown initializer {type(config).__name__}")
