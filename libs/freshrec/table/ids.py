"""Stable 64-bit ids for feature values, and the counter-based mixer the table draws from.

A row is keyed by (table, full 64-bit id). Raw categorical values become ids through
`hash_feature(slot, value)`: the first 8 bytes of BLAKE2b over the UTF-8 text ``slot:value``,
read as a little-endian unsigned integer. The hash is stable across processes, machines and
Python versions (unlike `hash()`), and nothing is reduced modulo a table size.

Integers that already are ids (a catalogue's item id, an account number) are used as they are
with `as_ids`: tables keyed by one entity need no hashing. Hash whenever several slots share a
table (the `context` table holds ``device:ios`` and ``hour:13``), so equal raw values of
different slots get different rows.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterable, Mapping

import numpy as np
import numpy.typing as npt

__all__ = [
    "MAX_ID",
    "as_ids",
    "context_ids",
    "hash_feature",
    "hash_features",
    "mix64",
    "uniform01",
]

MAX_ID = 2**64 - 1

_ID_BYTES = 8


def hash_feature(slot: str, value: str | int) -> int:
    """The stable 64-bit id of one feature value.

    Args:
        slot: the feature's name, e.g. ``"device"``.
        value: its raw value; an int is hashed as its decimal text.

    Returns:
        An int in ``[0, 2**64)``.
    """
    digest = hashlib.blake2b(f"{slot}:{value}".encode(), digest_size=_ID_BYTES).digest()
    return int.from_bytes(digest, "little", signed=False)


def hash_features(slot: str, values: Iterable[str | int]) -> npt.NDArray[np.uint64]:
    """`hash_feature` over many values of one slot.

    Args:
        slot: the feature's name.
        values: `B` raw values.

    Returns:
        `(B,)` uint64 ids, in the order given.
    """
    prefix = f"{slot}:".encode()
    joined = b"".join(
        hashlib.blake2b(prefix + str(v).encode(), digest_size=_ID_BYTES).digest() for v in values
    )
    return np.frombuffer(joined, dtype="<u8").astype(np.uint64)


def context_ids(context: Mapping[str, str | int | float]) -> list[int]:
    """Row ids of a request's context features: one per ``slot:value``, slots sorted.

    Args:
        context: feature name → value, e.g. ``{"device": "ios", "hour": 13}``.
    """
    return [_context_id(slot, str(value)) for slot, value in sorted(context.items())]


@functools.lru_cache(maxsize=65_536)
def _context_id(slot: str, value: str) -> int:
    # context features have few distinct values and recur in every event: hash each once
    return hash_feature(slot, value)


def as_ids(values: Iterable[int] | npt.NDArray[np.integer]) -> npt.NDArray[np.uint64]:
    """Integers that already are ids, as a `(B,)` uint64 array (no hashing, no modulo).

    Raises:
        ValueError: a value is negative, not an integer, or does not fit in 64 bits.
    """
    if isinstance(values, np.ndarray):
        if values.dtype.kind == "u" or (values.dtype.kind == "i" and not (values < 0).any()):
            return values.astype(np.uint64).reshape(-1)
        if values.dtype.kind == "i":
            raise ValueError("ids must be non-negative")
        values = values.reshape(-1).tolist()
    # Python ints go one by one: numpy would turn [1, 2**64 - 1] into float64 and lose bits.
    flat = list(values)
    if not all(isinstance(v, int | np.integer) and not isinstance(v, bool) for v in flat):
        raise ValueError("ids must be integers")
    ints = [int(v) for v in flat]
    if any(v < 0 for v in ints):
        raise ValueError("ids must be non-negative")
    if any(v > MAX_ID for v in ints):
        raise ValueError("ids must lie in [0, 2**64)")
    return np.array(ints, dtype=np.uint64).reshape(-1)


_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_S30 = np.uint64(30)
_S27 = np.uint64(27)
_S31 = np.uint64(31)
_S11 = np.uint64(11)


def mix64(x: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint64]:
    """SplitMix64's finaliser: a bijective, well-mixing map of uint64 arrays (any shape).

    Used as a counter-based random generator: ``mix64(key ^ counter)`` gives independent-looking
    draws that depend only on their inputs, so a replay draws the same numbers.
    """
    z = np.asarray(x, dtype=np.uint64).copy()
    z ^= z >> _S30
    z *= _M1
    z ^= z >> _S27
    z *= _M2
    z ^= z >> _S31
    return z


def uniform01(bits: npt.NDArray[np.uint64]) -> npt.NDArray[np.float64]:
    """Uniform floats in ``[0, 1)`` from the top 53 bits of `bits` (same shape)."""
    return (bits >> _S11).astype(np.float64) * (1.0 / 9007199254740992.0)
