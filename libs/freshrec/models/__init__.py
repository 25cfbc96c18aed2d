"""The dense model and its no-pickle serialisation."""

from freshrec.models.model import ModelConfig, RankingModel
from freshrec.models.serialization import decode_tensors, encode_tensors

__all__ = ["ModelConfig", "RankingModel", "decode_tensors", "encode_tensors"]
