"""The dense model, its inputs from raw features, and its no-pickle serialisation."""

from freshrec.models.features import context_row_ids, item_row_ids, mean_pool, user_row_ids
from freshrec.models.model import ModelConfig, RankingModel
from freshrec.models.published import (
    ITEM_NAMES_KEY,
    PUBLISHED_MODEL_KEY,
    PUBLISHED_VERSION_KEY,
    load_published_dense,
)
from freshrec.models.serialization import decode_tensors, encode_tensors

__all__ = [
    "ITEM_NAMES_KEY",
    "PUBLISHED_MODEL_KEY",
    "PUBLISHED_VERSION_KEY",
    "ModelConfig",
    "RankingModel",
    "context_row_ids",
    "decode_tensors",
    "encode_tensors",
    "item_row_ids",
    "load_published_dense",
    "mean_pool",
    "user_row_ids",
]
