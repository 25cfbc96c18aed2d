"""The dense model, its inputs from raw features, and its no-pickle serialisation."""

from freshrec.models.features import EntityTable, context_row_ids, entity_row_ids, mean_pool
from freshrec.models.model import (
    DEFAULT_LIKE_WEIGHT,
    ModelConfig,
    RankingModel,
    retrieval_query,
    retrieval_softmax_loss,
)
from freshrec.models.published import (
    ITEM_NAMES_KEY,
    PUBLISHED_MODEL_KEY,
    PUBLISHED_VERSION_KEY,
    load_published_dense,
)
from freshrec.models.serialization import decode_tensors, encode_tensors

__all__ = [
    "DEFAULT_LIKE_WEIGHT",
    "EntityTable",
    "ITEM_NAMES_KEY",
    "PUBLISHED_MODEL_KEY",
    "PUBLISHED_VERSION_KEY",
    "ModelConfig",
    "RankingModel",
    "context_row_ids",
    "entity_row_ids",
    "decode_tensors",
    "encode_tensors",
    "load_published_dense",
    "mean_pool",
    "retrieval_query",
    "retrieval_softmax_loss",
]
