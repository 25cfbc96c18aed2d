"""Where the trainer leaves what serving reads: the published dense model and item names.

The keys are metadata keys of the table backend (`{ns}:meta:{key}` in Redis; see
`docs/specs/trainer-state.md`). Both the trainer and the ranker import this module, which
defines no metrics and pulls in no training code.
"""

from __future__ import annotations

from typing import Any

import torch

from freshrec.models.serialization import decode_tensors
from freshrec.table.base import TableBackend

__all__ = [
    "ITEM_NAMES_KEY",
    "PUBLISHED_MODEL_KEY",
    "PUBLISHED_VERSION_KEY",
    "load_published_dense",
]

PUBLISHED_MODEL_KEY = "dense:model"
"""Metadata blob holding the serving copy of the dense model."""
PUBLISHED_VERSION_KEY = "dense:version"
"""Metadata hash whose `version` field names the published dense model."""
ITEM_NAMES_KEY = "names:item"
"""Metadata hash from an item row's 64-bit id (decimal) to the raw item id."""


def load_published_dense(
    backend: TableBackend,
) -> tuple[int, dict[str, torch.Tensor], dict[str, Any]] | None:
    """The latest published dense parameters, or None before the first publish.

    Args:
        backend: the table backend the trainer publishes through.

    Returns:
        (version, parameters by name, manifest meta incl. `model` config and `logit_offset`).
    """
    blob = backend.get_blob(PUBLISHED_MODEL_KEY)
    if blob is None:
        return None
    tensors, meta = decode_tensors(blob)
    return int(meta["version"]), tensors, meta
