"""The dense model and its no-pickle serialisation."""

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
    "decode_tensors",
    "encode_tensors",
    "load_published_dense",
]
