"""The dense part of freshrec's model; sparse rows come from the embedding table.

Two heads share the user and item rows:

- retrieval (two-tower): `s_r = <u, i> + b_r` — the inner product the FAISS index searches;
- ranking: `s = s_r + MLP([u, i, u ⊙ i, c])`, with `c` the mean of the request's context
  rows, so the ranker refines what retrieval found.

Both heads are trained with logistic loss on the same labels. Predicted probabilities are
`sigmoid(s + logit_offset)`, where `logit_offset = log(r)` undoes negative sampling at rate
`r` (log-odds correction), so they stay calibrated.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["ModelConfig", "RankingModel"]


@dataclass(frozen=True)
class ModelConfig:
    """Shape of the dense model.

    Attributes:
        user_dim: width of user rows (must equal `item_dim`).
        item_dim: width of item rows.
        context_dim: width of context rows.
        hidden: width of the ranking MLP's hidden layer.
        seed: seeds the dense parameters' initialisation.
    """

    user_dim: int = 32
    item_dim: int = 32
    context_dim: int = 8
    hidden: int = 32
    seed: int = 0


class RankingModel(nn.Module):
    """Retrieval and ranking heads over looked-up rows."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        if config.user_dim != config.item_dim:
            raise ValueError("user_dim must equal item_dim: retrieval is an inner product")
        self.config = config
        generator_state = torch.random.get_rng_state()
        torch.manual_seed(config.seed)
        width = 3 * config.item_dim + config.context_dim
        head = nn.Linear(config.hidden, 1)
        self.mlp = nn.Sequential(nn.Linear(width, config.hidden), nn.ReLU(), head)
        torch.random.set_rng_state(generator_state)
        # a zero head starts the ranker as the retrieval score; the MLP learns the residual
        nn.init.zeros_(head.weight)
        self.retrieval_bias = nn.Parameter(torch.zeros(()))

    def forward(
        self, user: torch.Tensor, item: torch.Tensor, context: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Score (user, item, context) triples.

        Args:
            user: `(B, D)` user rows.
            item: `(B, D)` item rows.
            context: `(B, C)` mean context rows (zeros when a request has none).

        Returns:
            `(ranking_logit, retrieval_logit)`, each `(B,)`.
        """
        retrieval = (user * item).sum(dim=1) + self.retrieval_bias
        features = torch.cat([user, item, user * item, context], dim=1)
        ranking = retrieval + self.mlp(features).squeeze(1)
        return ranking, retrieval

    def score_candidates(
        self, user: torch.Tensor, items: torch.Tensor, context: torch.Tensor
    ) -> torch.Tensor:
        """Ranking logits of many candidate items for one user, in one batched pass.

        Args:
            user: `(D,)` the user's row.
            items: `(N, D)` candidate item rows.
            context: `(C,)` mean context row.

        Returns:
            `(N,)` ranking logits.
        """
        n = items.shape[0]
        ranking, _ = self.forward(
            user.unsqueeze(0).expand(n, -1), items, context.unsqueeze(0).expand(n, -1)
        )
        return ranking
