"""Tensors to bytes and back without pickle: a JSON manifest followed by raw little-endian data.

Layout (version 1)::

    b"FRT1" | u32 manifest length | manifest JSON (utf-8) | tensor data, concatenated

The manifest is `{"format": 1, "meta": {...}, "tensors": [{"name", "dtype", "shape",
"offset", "nbytes"}]}` with offsets relative to the start of the data section.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from typing import Any

import numpy as np
import orjson
import torch

from freshrec.errors import InvalidInput

__all__ = ["decode_tensors", "encode_tensors"]

_MAGIC = b"FRT1"
_DTYPES: dict[str, tuple[torch.dtype, np.dtype[Any]]] = {
    "float32": (torch.float32, np.dtype("<f4")),
    "float64": (torch.float64, np.dtype("<f8")),
    "int64": (torch.int64, np.dtype("<i8")),
}
_NAMES = {torch_dtype: name for name, (torch_dtype, _) in _DTYPES.items()}


def encode_tensors(tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any]) -> bytes:
    """Serialise named tensors and a JSON-able `meta` mapping into one blob."""
    entries: list[dict[str, Any]] = []
    chunks: list[bytes] = []
    offset = 0
    for name, tensor in tensors.items():
        dtype_name = _NAMES.get(tensor.dtype)
        if dtype_name is None:
            raise InvalidInput(f"tensor {name!r} has unsupported dtype {tensor.dtype}")
        data = tensor.detach().cpu().contiguous().numpy().astype(_DTYPES[dtype_name][1]).tobytes()
        entries.append(
            {
                "name": name,
                "dtype": dtype_name,
                "shape": list(tensor.shape),
                "offset": offset,
                "nbytes": len(data),
            }
        )
        chunks.append(data)
        offset += len(data)
    manifest = orjson.dumps({"format": 1, "meta": dict(meta), "tensors": entries})
    return b"".join([_MAGIC, struct.pack("<I", len(manifest)), manifest, *chunks])


def decode_tensors(blob: bytes) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Inverse of `encode_tensors`.

    Raises:
        InvalidInput: the blob is truncated, has a wrong magic, or an inconsistent manifest.
    """
    if len(blob) < 8 or blob[:4] != _MAGIC:
        raise InvalidInput("not a freshrec tensor blob")
    (length,) = struct.unpack_from("<I", blob, 4)
    try:
        manifest = orjson.loads(blob[8 : 8 + length])
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"corrupt tensor manifest: {exc}") from exc
    data = memoryview(blob)[8 + length :]
    tensors: dict[str, torch.Tensor] = {}
    for entry in manifest["tensors"]:
        _, np_dtype = _DTYPES[entry["dtype"]]
        start, nbytes = entry["offset"], entry["nbytes"]
        if start + nbytes > len(data):
            raise InvalidInput(f"tensor {entry['name']!r} runs past the end of the blob")
        array = np.frombuffer(data[start : start + nbytes], dtype=np_dtype).copy()
        tensors[entry["name"]] = torch.from_numpy(array.reshape(entry["shape"]))
    return tensors, dict(manifest["meta"])
