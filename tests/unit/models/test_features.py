"""`freshrec.models.features`: the row ids and pooled context the trainer and ranker share."""

from __future__ import annotations

import numpy as np
import torch

from freshrec.models import context_row_ids, entity_row_ids, mean_pool
from freshrec.table import context_ids, hash_feature


def test_user_and_item_row_ids_are_their_slot_hashes() -> None:
    users = entity_row_ids("user", ["u1", 7, "u1"])
    items = entity_row_ids("item", ["7"])
    assert users.dtype == np.uint64 and users.shape == (3,)
    u1, u7 = hash_feature("user", "u1"), hash_feature("user", "7")
    assert users.tolist() == [u1, u7, u1]
    # the same raw value in another table is another row
    assert items.tolist() == [hash_feature("item", "7")]
    assert items[0] != users[1]


def test_context_row_ids_flattens_in_batch_order_and_skips_empty_contexts() -> None:
    contexts = [{"hour": 13, "device": "ios"}, {}, {"device": "web"}]
    ids, positions = context_row_ids(contexts)
    assert ids.dtype == np.uint64 and positions.dtype == np.int64
    assert ids.tolist() == [*context_ids(contexts[0]), *context_ids(contexts[2])]
    assert positions.tolist() == [0, 0, 2]
    empty_ids, empty_positions = context_row_ids([{}, {}])
    assert empty_ids.shape == (0,) and empty_positions.shape == (0,)


def test_mean_pool_averages_rows_per_position_and_is_zero_elsewhere() -> None:
    vectors = torch.tensor([[1.0, 2.0], [3.0, 6.0], [5.0, -1.0]])
    positions = np.array([0, 0, 2], dtype=np.int64)
    pooled = mean_pool(vectors, positions, 4, 2)
    assert pooled.shape == (4, 2) and pooled.dtype == torch.float32
    np.testing.assert_array_equal(pooled.numpy(), [[2.0, 4.0], [0.0, 0.0], [5.0, -1.0], [0.0, 0.0]])


def test_mean_pool_of_no_rows_is_zeros_of_the_given_width() -> None:
    pooled = mean_pool(torch.zeros((0, 3)), np.zeros(0, dtype=np.int64), 2, 3)
    assert pooled.shape == (2, 3) and not pooled.any()


def test_mean_pool_matches_numpy_and_passes_gradients() -> None:
    rng = np.random.default_rng(3)
    raw = rng.standard_normal((50, 8)).astype(np.float32)
    positions = np.sort(rng.integers(0, 10, size=50)).astype(np.int64)
    vectors = torch.from_numpy(raw.copy()).requires_grad_(True)
    pooled = mean_pool(vectors, positions, 12, 8)
    for p in range(12):
        rows = raw[positions == p]
        want = rows.mean(axis=0) if rows.shape[0] else np.zeros(8, dtype=np.float32)
        np.testing.assert_allclose(pooled[p].detach().numpy(), want, rtol=1e-6, atol=1e-6)
    pooled.sum().backward()  # type: ignore[no-untyped-call]
    assert vectors.grad is not None
    counts = np.bincount(positions, minlength=12)
    np.testing.assert_allclose(vectors.grad.numpy()[:, 0], 1.0 / counts[positions], rtol=1e-6)
