"""Members' dense deltas summed over a common anchor: turns of several members add up."""

from __future__ import annotations

import torch

from freshrec.table import InMemoryTableBackend
from freshrec.training.members import DenseSharing


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Linear(3, 2)


def _publish(sharing: DenseSharing, model: torch.nn.Module, backend: InMemoryTableBackend) -> int:
    count = sharing.sync(model, backend)
    with backend.transaction() as txn:
        sharing.stage(txn, 1.0)
    return count


def _step(model: torch.nn.Module, by: float) -> None:
    with torch.no_grad():
        for p in model.parameters():
            p.add_(by)


def test_members_taking_turns_sum_every_members_progress() -> None:
    backend = InMemoryTableBackend()
    start = {k: v.clone() for k, v in _model().state_dict().items()}
    models = [_model(), _model()]
    sharing = [DenseSharing("a"), DenseSharing("b")]
    for member, model in zip(sharing, models, strict=True):
        member.reset(model, backend)
    _step(models[0], 1.0)
    assert _publish(sharing[0], models[0], backend) == 1
    _step(models[1], 2.0)  # computed on the start: b has not synced since
    assert _publish(sharing[1], models[1], backend) == 2
    for k, v in models[1].state_dict().items():
        torch.testing.assert_close(v, start[k] + 3.0)
    _step(models[0], 0.5)
    _publish(sharing[0], models[0], backend)
    for k, v in models[0].state_dict().items():
        torch.testing.assert_close(v, start[k] + 3.5)

    # a restarted member reads its delta back and loses none of its work
    again, model = DenseSharing("b"), _model()
    again.reset(model, backend)
    _publish(again, model, backend)
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, start[k] + 3.5)
