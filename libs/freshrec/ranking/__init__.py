"""Serving: hot-reloaded model, fallback candidates, and the recommendation pipeline."""

from freshrec.ranking.batcher import RecommendBatcher
from freshrec.ranking.models import LoadedModel, ModelHolder
from freshrec.ranking.popularity import PopularityTracker
from freshrec.ranking.recommender import Query, Recommendation, Recommender, ScoredItem

__all__ = [
    "LoadedModel",
    "ModelHolder",
    "PopularityTracker",
    "Query",
    "RecommendBatcher",
    "Recommendation",
    "Recommender",
    "ScoredItem",
]
