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
from typing import cast

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
        return self.score_grid(user.unsqueeze(0), items.unsqueeze(0), context.unsqueeze(0))[0]

    def score_grid(
        self, users: torch.Tensor, items: torch.Tensor, contexts: torch.Tensor
    ) -> torch.Tensor:
        """Ranking logits of `M` candidates for each of `B` users: what `forward` gives for
        every (user, candidate) pair, at a third of its cost.

        The first MLP layer is split by input block, `W [u, i, u*i, c] + b =
        (W_i + W_ui diag(u)) i + (W_u u + W_c c + b)`: per user one `(H, D)` matrix and one
        bias, then one `(M, D) x (D, H)` product per user instead of a `(M, 3D + C)` feature
        matrix through the full layer.

        Args:
            users: `(B, D)` user rows.
            items: `(B, M, D)` candidate rows per user.
            contexts: `(B, C)` mean context rows.

        Returns:
            `(B, M)` ranking logits.
        """
        d = self.config.item_dim
        first, head = cast(nn.Linear, self.mlp[0]), cast(nn.Linear, self.mlp[2])
        weight = first.weight
        w_user, w_item, w_cross, w_context = (
            weight[:, :d],
            weight[:, d : 2 * d],
            weight[:, 2 * d : 3 * d],
            weight[:, 3 * d :],
        )
        per_user = w_item.unsqueeze(0) + w_cross.unsqueeze(0) * users.unsqueeze(1)  # (B, H, D)
        bias = users @ w_user.T + contexts @ w_context.T + first.bias  # (B, H)
        hidden = torch.relu(torch.baddbmm(bias.unsqueeze(1), items, per_user.transpose(1, 2)))
        retrieval = torch.bmm(items, users.unsqueeze(2)).squeeze(2) + self.retrieval_bias
        return retrieval + (hidden @ head.weight.squeeze(0)) + head.bias
