"""The binary row encoding (format version 1), as specified in `docs/specs/table.md`.

One row is one fixed-size little-endian record::

    offset  size  field
    0       1     format version (1)
    1       1     flags (0, reserved)
    2       2     reserved (0)
    4       4     count       uint32, occurrences seen (saturating)
    8       8     event_time  float64, unix seconds of the last update's event
    16      8     wall_time   float64, unix seconds of the last write
    24      4·D   vector      float32[D]
    24+4·D  4·S   state       float32[S], the optimizer's slots

A batch of rows is encoded and decoded as one numpy structured array, so neither direction
loops over rows in Python beyond slicing the joined bytes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import numpy as np
import numpy.typing as npt

from freshrec.errors import ConfigError
from freshrec.table.records import FloatArray

__all__ = [
    "FORMAT_VERSION",
    "HEADER_BYTES",
    "decode_rows",
    "encode_records",
    "encode_rows",
    "row_dtype",
]

FORMAT_VERSION = 1
HEADER_BYTES = 24


def row_dtype(dim: int, width: int) -> np.dtype[np.void]:
    """The structured dtype of one encoded row with `dim` columns and `width` slots."""
    return np.dtype(
        [
            ("version", "u1"),
            ("flags", "u1"),
            ("reserved", "<u2"),
            ("count", "<u4"),
            ("event_time", "<f8"),
            ("wall_time", "<f8"),
            ("vector", "<f4", (dim,)),
            ("state", "<f4", (width,)),
        ]
    )


def encode_records(
    dtype: np.dtype[np.void],
    vectors: FloatArray,
    state: FloatArray,
    *,
    event_time: npt.NDArray[np.float64],
    wall_time: npt.NDArray[np.float64],
    count: npt.NDArray[np.int64],
) -> npt.NDArray[np.uint8]:
    """Encode `N` rows into one `(N, row_bytes)` uint8 matrix, one encoded row per line.

    Args:
        dtype: from `row_dtype`.
        vectors: `(N, D)` float32.
        state: `(N, S)` float32.
        event_time: `(N,)` float64.
        wall_time: `(N,)` float64.
        count: `(N,)` int64, clipped to uint32.
    """
    n = int(vectors.shape[0])
    rec = np.zeros(n, dtype=dtype)
    rec["version"] = FORMAT_VERSION
    rec["count"] = np.clip(count, 0, 2**32 - 1)
    rec["event_time"] = event_time
    rec["wall_time"] = wall_time
    rec["vector"] = vectors
    rec["state"] = state
    return rec.view(np.uint8).reshape(n, dtype.itemsize)


def encode_rows(
    dtype: np.dtype[np.void],
    vectors: FloatArray,
    state: FloatArray,
    *,
    event_time: npt.NDArray[np.float64],
    wall_time: npt.NDArray[np.float64],
    count: npt.NDArray[np.int64],
) -> list[bytes]:
    """Encode `N` rows (arguments as `encode_records`) as `N` byte strings."""
    raw = encode_records(
        dtype, vectors, state, event_time=event_time, wall_time=wall_time, count=count
    ).tobytes()
    size = dtype.itemsize
    return [raw[i : i + size] for i in range(0, len(raw), size)]


def decode_rows(
    dtype: np.dtype[np.void], values: Sequence[bytes | None]
) -> tuple[npt.NDArray[np.bool_], np.ndarray]:
    """Decode what a multi-get returned.

    Args:
        dtype: from `row_dtype`.
        values: `B` encoded rows, None where the key was absent.

    Returns:
        `(B,)` bool mask of present rows and a `(P,)` structured array of those rows, in order.

    Raises:
        ConfigError: a row's size or version does not match `dtype` (the table's dim or
            optimizer changed without migrating its rows).
    """
    if None in values:
        present = np.array([v is not None for v in values], dtype=np.bool_)
        joined = b"".join([v for v in values if v is not None])
    else:
        present = np.ones(len(values), dtype=np.bool_)
        joined = b"".join(cast(Sequence[bytes], values))
    n = int(present.sum())
    if len(joined) != n * dtype.itemsize:
        sizes = sorted({len(v) for v in values if v is not None})
        raise ConfigError(
            f"stored rows have {sizes} bytes but the table config expects {dtype.itemsize}: "
            "dim or optimizer changed without migrating the table"
        )
    rec = np.frombuffer(joined, dtype=dtype)
    if n and not (rec["version"] == FORMAT_VERSION).all():
        raise ConfigError(f"stored rows use an unknown format version (expected {FORMAT_VERSION})")
    return present, rec
