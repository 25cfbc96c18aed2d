"""One bound on the compute threads of a process: PyTorch's, and every BLAS and OpenMP pool
loaded (numpy's OpenBLAS, FAISS's OpenMP).

A serving or training step here is a small matrix product. Extra threads do not make it
faster; between products, OpenBLAS's idle workers spin-wait on the other cores, taking
them from the event loop, the load and the other processes of the host.
"""

from __future__ import annotations

import torch
from threadpoolctl import threadpool_limits

__all__ = ["limit_compute_threads"]


def limit_compute_threads(threads: int) -> None:
    """Bound PyTorch and every BLAS / OpenMP thread pool loaded so far to `threads`.

    Call after the libraries are imported (a pool loaded later keeps its own default).
    """
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    torch.set_num_threads(threads)
    threadpool_limits(limits=threads)
