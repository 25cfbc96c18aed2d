"""The dense part of freshrec's model; sparse rows come from the embedding table.

Two heads share the user and item rows, and learn different things:

- **retrieval** (two-tower), what users *interact with*: `s_r(u, i) = <q(u), i>`, where
  `q(u)` is the user row with its last component replaced by the constant 1, so the item
  row's last component is the item's bias and the FAISS inner-product index over the raw
  item rows returns exactly what the model scores. Trained with a sampled softmax over
  in-batch and sampled negatives with logQ correction (`retrieval_softmax_loss`), so
  `s_r` is the log of `P(i | u)` up to a per-user constant: a relative score, not a
  probability.
- **ranking**, what users *like* among what they interact with:
  `s = b + w . x + MLP(x)`, `x = [u, i, u * i, c]`, `c` the mean of the request's context
  rows. Trained with logistic loss on preference labels; `sigmoid(s + logit_offset)` is a
  calibrated `P(like | interact)`, `logit_offset = log(r)` undoing negative subsampling at
  rate `r` (log-odds correction).

Serving orders candidates by `s_r + like_weight * log sigmoid(s + logit_offset)`
(`serving_grid`): `like_weight = 0` is retrieval alone, `like_weight = 1` the log of
`P(interact) * P(like | interact)`, the chance the user interacts *and* likes it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import torch
from torch import nn

__all__ = [
    "DEFAULT_LIKE_WEIGHT",
    "MODEL_FORMAT",
    "ModelConfig",
    "RankingModel",
    "retrieval_query",
    "retrieval_softmax_loss",
]

MODEL_FORMAT = 2
"""Version of the dense parameters' layout, written with every checkpoint and published
model. 1 (or absent): both heads on preference labels with a scalar retrieval bias; 2: the
two objectives here (item bias in the row, a linear term in the ranking head)."""

DEFAULT_LIKE_WEIGHT = 1.0
"""Weight of `log P(like | interact)` against `log P(interact)` in the serving order."""


@dataclass(frozen=True)
class ModelConfig:
    """Shape of the dense model.

    Attributes:
        user_dim: width of user rows (must equal `item_dim`; the last component is the
            retrieval head's constant-1 slot on users, the bias on items).
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


def retrieval_query(user: torch.Tensor) -> torch.Tensor:
    """The retrieval query of user rows: the last component set to 1 (meets the item bias).

    Args:
        user: `(..., D)` user rows.

    Returns:
        `(..., D)` queries.
    """
    return torch.cat([user[..., :-1], torch.ones_like(user[..., -1:])], dim=-1)


def retrieval_softmax_loss(
    queries: torch.Tensor,
    items: torch.Tensor,
    target: torch.Tensor,
    log_q: torch.Tensor,
    masked: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor:
    """Sampled-softmax loss with logQ correction (Yi et al. 2019), summed over positives.

    Each positive `(user p, item target[p])` is classified among every candidate column;
    column `j`'s logit is `<q_p, item_j> - log_q[j]`, where `log_q[j]` is the log of how
    often item `j` is expected among the candidates. Without it, items that are sampled
    often (popular ones, as in-batch negatives) would be pushed down for being popular.

    Args:
        queries: `(P, D)` retrieval queries of the positives' users.
        items: `(N, D)` candidate item rows (the batch's items and sampled negatives).
        target: `(P,)` int64 column of each positive's item.
        log_q: `(N,)` log expected occurrences of each candidate.
        masked: `(rows, columns)`, two `(K,)` int64 tensors: the (positive, column) pairs
            that must not count as a negative (another item the same user interacted with in
            the batch); never a positive's own target.

    Returns:
        The summed cross-entropy, a scalar.
    """
    # one fused product-and-bias, masked in place: a P x N matrix is written once, not thrice
    logits = torch.addmm(log_q.neg().unsqueeze(0), queries, items.T)
    if masked is not None:
        logits.index_put_(masked, torch.tensor(float("-inf")))
    return nn.functional.cross_entropy(logits, target, reduction="sum")


class RankingModel(nn.Module):
    """Retrieval and ranking heads over looked-up rows."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        if config.user_dim != config.item_dim:
            raise ValueError("user_dim must equal item_dim: retrieval is an inner product")
        if config.item_dim < 2:
            raise ValueError("rows need at least 2 components: one of them is the item bias")
        self.config = config
        generator_state = torch.random.get_rng_state()
        torch.manual_seed(config.seed)
        width = 3 * config.item_dim + config.context_dim
        head = nn.Linear(config.hidden, 1)
        self.mlp = nn.Sequential(nn.Linear(width, config.hidden), nn.ReLU(), head)
        self.linear = nn.Linear(width, 1)
        torch.random.set_rng_state(generator_state)
        # zero heads start the ranker at P(like) = 1/2; both learn from there
        nn.init.zeros_(head.weight)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

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
        retrieval = (retrieval_query(user) * item).sum(dim=1)
        features = torch.cat([user, item, user * item, context], dim=1)
        ranking = self.linear(features).squeeze(1) + self.mlp(features).squeeze(1)
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

    @staticmethod
    def retrieval_grid(users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Retrieval logits of `M` candidates for each of `B` users (what FAISS returns).

        Args:
            users: `(B, D)` user rows.
            items: `(B, M, D)` candidate rows per user.

        Returns:
            `(B, M)` retrieval logits.
        """
        return torch.bmm(items, retrieval_query(users).unsqueeze(2)).squeeze(2)

    def score_grid(
        self, users: torch.Tensor, items: torch.Tensor, contexts: torch.Tensor
    ) -> torch.Tensor:
        """Ranking logits of `M` candidates for each of `B` users: what `forward` gives for
        every (user, candidate) pair, at a third of its cost.

        The first MLP layer is split by input block, `W [u, i, u*i, c] + b =
        (W_i + W_ui diag(u)) i + (W_u u + W_c c + b)`: per user one `(H, D)` matrix and one
        bias, then one `(M, D) x (D, H)` product per user instead of a `(M, 3D + C)` feature
        matrix through the full layer. The linear term splits the same way.

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
        lin = self.linear.weight[0]
        l_user, l_item, l_cross, l_context = (
            lin[:d],
            lin[d : 2 * d],
            lin[2 * d : 3 * d],
            lin[3 * d :],
        )
        lin_item = l_item.unsqueeze(0) + l_cross.unsqueeze(0) * users  # (B, D)
        lin_rest = users @ l_user + contexts @ l_context + self.linear.bias  # (B,)
        linear = torch.bmm(items, lin_item.unsqueeze(2)).squeeze(2) + lin_rest.unsqueeze(1)
        return linear + (hidden @ head.weight.squeeze(0)) + head.bias

    def serving_grid(
        self,
        users: torch.Tensor,
        items: torch.Tensor,
        contexts: torch.Tensor,
        *,
        like_weight: float,
        logit_offset: float,
    ) -> torch.Tensor:
        """The serving order's scores: `log P(interact)` (up to a per-user constant) plus
        `like_weight * log P(like | interact)`.

        Args:
            users: `(B, D)` user rows.
            items: `(B, M, D)` candidate rows per user.
            contexts: `(B, C)` mean context rows.
            like_weight: weight of the ranking head's log-probability (0: retrieval only).
            logit_offset: added to the ranking logit (undoes negative subsampling).

        Returns:
            `(B, M)` scores; higher is better.
        """
        retrieval = self.retrieval_grid(users, items)
        if like_weight == 0.0:
            return retrieval
        ranking = self.score_grid(users, items, contexts)
        return retrieval + like_weight * nn.functional.logsigmoid(ranking + logit_offset)
