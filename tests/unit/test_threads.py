"""`limit_compute_threads` bounds PyTorch and the BLAS / OpenMP pools together."""

from __future__ import annotations

from collections.abc import Iterator

import faiss
import numpy as np
import pytest
import torch
from threadpoolctl import threadpool_info, threadpool_limits

from freshrec.threads import limit_compute_threads


@pytest.fixture(autouse=True)
def _restore() -> Iterator[None]:
    torch_threads = torch.get_num_threads()
    with threadpool_limits():  # restores every pool's limit on exit
        yield
    torch.set_num_threads(torch_threads)


def test_every_pool_gets_the_bound() -> None:
    np.ones((64, 64)) @ np.ones((64, 64))  # BLAS is loaded and used
    limit_compute_threads(1)
    assert torch.get_num_threads() == 1
    assert faiss.omp_get_max_threads() == 1
    blas = [pool for pool in threadpool_info() if pool["user_api"] == "blas"]
    assert blas, "numpy's BLAS should be visible"
    assert {pool["num_threads"] for pool in blas} == {1}


def test_a_bound_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="threads"):
        limit_compute_threads(0)
