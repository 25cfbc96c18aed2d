"""Serving: hot-reloaded model, fallback candidates, and the recommendation pipeline."""

from freshrec.ranking.models import LoadedModel, ModelHolder
from freshrec.ranking.popularity import PopularityTracker
from freshrec.ranking.recommender import Recommendation, Recommender, ScoredItem

__all__ = [
    "LoadedModel",
    "ModelHolder",
    "PopularityTracker",
    "Recommendation",
    "Recommender",
    "ScoredItem",
]
