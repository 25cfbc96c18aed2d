from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from freshrec.errors import InvalidInput
from freshrec.models import ModelConfig, RankingModel, decode_tensors, encode_tensors
from freshrec.training import StreamingAuc, auc


def _auc_by_pairs(scores: np.ndarray, labels: np.ndarray) -> float:
    pos, neg = scores[labels == 1], scores[labels == 0]
    wins = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(wins / (len(pos) * len(neg)))


def test_auc_matches_pairwise_definition_with_ties() -> None:
    rng = np.random.default_rng(0)
    scores = np.round(rng.random(400), 1)  # many ties
    labels = (rng.random(400) < 0.3).astype(np.float64)
    assert auc(scores, labels) == pytest.approx(_auc_by_pairs(scores, labels), abs=1e-12)
    assert auc(np.array([0.1, 0.9]), np.array([0.0, 1.0])) == 1.0
    assert math.isnan(auc(np.array([0.5, 0.6]), np.array([1.0, 1.0])))


def test_streaming_auc_keeps_only_the_window() -> None:
    window = StreamingAuc(window=100)
    window.update(np.linspace(0, 1, 100), np.r_[np.ones(50), np.zeros(50)])  # all wrong: 0.0
    assert window.value() == pytest.approx(0.0)
    window.update(np.linspace(0, 1, 100), np.r_[np.zeros(50), np.ones(50)])  # evicts the old
    assert window.value() == pytest.approx(1.0)


def test_tensor_blob_round_trip_and_corruption() -> None:
    model = RankingModel(ModelConfig(user_dim=4, item_dim=4, context_dim=2, hidden=3))
    tensors = {**model.state_dict(), "steps": torch.tensor([7], dtype=torch.int64)}
    blob = encode_tensors(tensors, {"version": 3})
    decoded, meta = decode_tensors(blob)
    assert meta == {"version": 3}
    assert decoded.keys() == tensors.keys()
    for name, tensor in tensors.items():
        assert torch.equal(decoded[name], tensor), name
    with pytest.raises(InvalidInput):
        decode_tensors(b"nope" + blob[4:])
    with pytest.raises(InvalidInput):
        decode_tensors(blob[:-8])


def test_model_seed_fixes_dense_init_and_scores_candidates_in_one_pass() -> None:
    a = RankingModel(ModelConfig(seed=5))
    b = RankingModel(ModelConfig(seed=5))
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(pa, pb), name
    user, items, ctx = torch.randn(32), torch.randn(10, 32), torch.zeros(8)
    batched = a.score_candidates(user, items, ctx)
    one_by_one = torch.stack([a(user[None], items[j : j + 1], ctx[None])[0][0] for j in range(10)])
    assert torch.allclose(batched, one_by_one, atol=1e-6)


def test_score_grid_equals_forward_on_every_pair() -> None:
    model = RankingModel(ModelConfig(seed=2))
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():  # a trained-looking model: no zero head, no zero biases
        for parameter in model.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.3)
    users = torch.randn(4, 32, generator=generator)
    items = torch.randn(4, 7, 32, generator=generator)
    contexts = torch.randn(4, 8, generator=generator)
    grid = model.score_grid(users, items, contexts)
    pairs, _ = model(
        users.repeat_interleave(7, 0), items.reshape(28, 32), contexts.repeat_interleave(7, 0)
    )
    assert grid.shape == (4, 7)
    assert torch.allclose(grid.reshape(28), pairs, atol=1e-5)
