"""Serving: hot-reloaded model, fallback candidates, the recommendation pipeline, and the
runtime that wires them for a ranker process."""

from freshrec.ranking.batcher import RecommendBatcher
from freshrec.ranking.model_holder import LoadedModel, ModelHolder
from freshrec.ranking.popularity import PopularityTracker
from freshrec.ranking.recommender import Query, Recommendation, Recommender, ScoredItem
from freshrec.ranking.runtime import RankerConfig, RankerRuntime, ServedRow

__all__ = [
    "LoadedModel",
    "ModelHolder",
    "PopularityTracker",
    "Query",
    "RankerConfig",
    "RankerRuntime",
    "RecommendBatcher",
    "Recommendation",
    "Recommender",
    "ScoredItem",
    "ServedRow",
]
