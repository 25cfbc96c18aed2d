"""The ranker's answers as typed models: what the service declares and what clients parse.

`services.ranker` answers with these shapes (its OpenAPI document is built from them) and
`freshrec.client` validates responses with the same classes, so the two cannot drift apart.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

__all__ = ["RecommendedItem", "Recommendation", "Row"]


class RecommendedItem(BaseModel):
    """One recommended item and its score (see `Recommendation.scoring`)."""

    item_id: str
    score: float


class Recommendation(BaseModel):
    """The answer to `POST /v1/recommend`."""

    items: list[RecommendedItem]
    model_version: int | None = Field(description="Dense model served; null before the first.")
    index_version: int = Field(description="Content version of the retrieval index.")
    fallback: bool = Field(description="Answered from popular/fresh items (no user row yet).")
    scoring: str = Field(
        description="What `score` is: log P(interact) (the retrieval head, up to a per-user "
        "constant) + like_weight * log P(like | interact) (the ranking head)."
    )
    like_weight: float = Field(description="The weight of the ranking head in `score`.")


class Row(BaseModel):
    """The answer to `GET /v1/tables/{table}/rows/{row_id}`: one embedding row."""

    table: str
    id: str
    vector: list[float]
    event_time: float
    wall_time: float
    count: int
    age_s: float
