"""The trainer's retrieval objective: a sampled softmax over a batch's items, logQ-corrected.

Every distinct item of a micro-batch (its examples', the replayed interactions' and a few
uniformly drawn recent items) is a column; each interaction's own item is its target, the
other items its user met in the batch are masked out, and each column's logit is corrected
by the log of how often it is expected among the columns (logQ), so popular items are not
pushed down for being sampled often.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import torch

from freshrec.models.model import retrieval_query, retrieval_softmax_loss
from freshrec.table.base import IdArray
from freshrec.training.examples import unit_hash
from freshrec.training.frequency import ItemFrequency
from freshrec.training.leaf import Leaf

__all__ = ["retrieval_loss", "same_user_pairs", "sample_negatives"]


def sample_negatives(pool: Sequence[str], count: int, salt: str) -> list[str]:
    """`count` items of `pool` drawn uniformly (with replacement) by a hash of `salt`: the
    same batch always draws the same items (none from an empty pool)."""
    if not pool:
        return []
    return [pool[int(unit_hash(f"{salt}:{j}") * len(pool))] for j in range(count)]


def same_user_pairs(
    users: IdArray, target: npt.NDArray[np.int64]
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Which columns are no negative for each positive: the items its user met elsewhere in
    the batch (its own target stays a column, the one it is classified as).

    Built from each distinct user's set of columns, repeated for each of its positives;
    comparing all `P x P` pairs of positives would cost 6 M comparisons and a nonzero over
    them at 2,500 positives (a tenth of a batch's training time, profiled).

    Args:
        users: `(P,)` each positive's user row id.
        target: `(P,)` each positive's item column.

    Returns:
        `(rows, columns)`, the masked (positive, column) pairs, each `(K,)` int64, in row order.
    """
    target = target.astype(np.int64)
    _, user_of = np.unique(users, return_inverse=True)
    user_of = user_of.astype(np.int64)
    # each distinct (user, column) once, in user order
    width = int(target.max(initial=0)) + 1
    pair_user, pair_column = np.divmod(np.unique(user_of * width + target), width)
    per_user = np.bincount(pair_user, minlength=int(user_of.max(initial=-1)) + 1)
    # positive p takes its user's stretch of the pairs, first[u] .. first[u] + per_user[u]
    first = np.cumsum(per_user) - per_user
    repeats = per_user[user_of]
    rows = np.repeat(np.arange(users.shape[0], dtype=np.int64), repeats)
    start_of_row = np.repeat(np.cumsum(repeats) - repeats, repeats)
    within = np.arange(rows.shape[0], dtype=np.int64) - start_of_row
    columns = pair_column[np.repeat(first[user_of], repeats) + within]
    other = columns != target[rows]
    return rows[other], columns[other]


def retrieval_loss(
    frequency: ItemFrequency,
    positives: list[int],
    *,
    fresh: int,
    users: IdArray,
    items: IdArray,
    user_rows: torch.Tensor,
    item_leaf: Leaf,
    negatives: int,
    pool: int,
) -> torch.Tensor:
    """The sampled softmax of the batch's interactions over every distinct item of the batch.

    A candidate's expected occurrences among the columns are `P * p(item)` from the `P`
    positives (`p` the streaming frequency estimate, updated with this batch's fresh
    interactions first; replayed ones are drawn in proportion to the same frequencies) plus
    `M / pool` from `M` uniform draws out of the recent-item pool.

    Args:
        frequency: the streaming item-frequency estimate (updated here).
        positives: `(P,)` example indices into `users` / `items`: the first `fresh` are the
            batch's own interactions, the rest replayed ones.
        users, items: `(N,)` row ids of every example's user and item.
        user_rows: `(N', dim)` the users' rows (autograd leaf), indexed by example.
        item_leaf: the item rows pulled for the batch (its columns).
        negatives: `M`, how many recent items were drawn as extra columns.
        pool: the size of the recent-item pool they were drawn from.

    Returns:
        The scalar loss.
    """
    index = np.asarray(positives, dtype=np.int64)
    frequency.update(items[index[:fresh]])
    target = item_leaf.inverse[index]
    columns = item_leaf.pulled.ids
    expected = len(positives) * frequency.probability(columns)
    if negatives and pool:
        expected = expected + negatives / pool
    rows, masked = same_user_pairs(users[index], target)
    queries = retrieval_query(user_rows[torch.from_numpy(index)])
    return retrieval_softmax_loss(
        queries,
        item_leaf.tensor,
        torch.from_numpy(target),
        torch.from_numpy(np.log(expected).astype(np.float32)),
        (torch.from_numpy(rows), torch.from_numpy(masked)),
    )
