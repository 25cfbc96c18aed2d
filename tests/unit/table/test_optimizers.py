"""Per-row optimizers: shapes, initial slots and one step checked against PyTorch."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from freshrec.table.config import AdagradConfig, AdamConfig, FtrlConfig, SgdConfig
from freshrec.table.optimizers import make_optimizer


@pytest.mark.parametrize(
    ("config", "width"),
    [(SgdConfig(), 0), (AdagradConfig(), 6), (AdamConfig(), 13), (FtrlConfig(), 12)],
)
def test_state_width(config: SgdConfig, width: int) -> None:
    assert make_optimizer(config).state_width(6) == width
    state = make_optimizer(config).initial_state(np.zeros((3, 6), dtype=np.float32))
    assert state.shape == (3, width) and state.dtype == np.float32


def test_adagrad_initial_accumulator() -> None:
    opt = make_optimizer(AdagradConfig(initial_accumulator=0.25))
    assert (opt.initial_state(np.ones((2, 3), dtype=np.float32)) == 0.25).all()


def test_ftrl_initial_state_reproduces_initial_vector() -> None:
    config = FtrlConfig(alpha=0.1, beta=1.0, l1=0.02, l2=0.5)
    opt = make_optimizer(config)
    w0 = np.array([[0.3, -0.2, 0.0, 1e-4]], dtype=np.float32)
    state = opt.initial_state(w0)
    w = w0.copy()
    opt.step(w, state, np.zeros_like(w0))  # a zero gradient leaves the weight where it is
    np.testing.assert_allclose(w, w0, atol=1e-6)


def test_ftrl_l1_gives_exact_zeros() -> None:
    opt = make_optimizer(FtrlConfig(alpha=0.1, beta=1.0, l1=5.0))
    w = np.zeros((1, 4), dtype=np.float32)
    state = opt.initial_state(w)
    opt.step(w, state, np.array([[0.1, -0.2, 0.3, 10.0]], dtype=np.float32))
    assert w[0, :3].tolist() == [0.0, 0.0, 0.0] and w[0, 3] != 0.0


def test_adagrad_step_matches_torch_dense() -> None:
    rng = np.random.default_rng(0)
    w0 = rng.normal(size=(5, 4)).astype(np.float32)
    grads = [rng.normal(size=(5, 4)).astype(np.float32) for _ in range(10)]
    opt = make_optimizer(AdagradConfig(lr=0.3, initial_accumulator=0.1, eps=1e-10))
    w, state = w0.copy(), opt.initial_state(w0)
    param = torch.nn.Parameter(torch.from_numpy(w0.copy()))
    ref = torch.optim.Adagrad([param], lr=0.3, initial_accumulator_value=0.1, eps=1e-10)
    for g in grads:
        opt.step(w, state, g)
        param.grad = torch.from_numpy(g.copy())
        ref.step()
    np.testing.assert_allclose(w, param.detach().numpy(), atol=1e-6)
