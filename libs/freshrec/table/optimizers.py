"""Per-row optimizers, vectorised over the `(U, D)` rows a batch touches.

Each row carries its own optimizer slots (`state`, `(U, S)` float32), so rows can live in a
key-value store and be updated independently, as PyTorch's sparse optimizers update only the
rows present in a sparse gradient. The formulas follow PyTorch exactly:

- `Sgd`: ``w -= lr * g`` (`torch.optim.SGD`, no momentum). `S = 0`.
- `Adagrad`: ``h += g²; w -= lr * g / (sqrt(h) + eps)`` (`torch.optim.Adagrad` with sparse
  gradients, ``lr_decay = 0``); `h` starts at `initial_accumulator`. `S = D`.
- `Adam`: `torch.optim.SparseAdam`'s update with a per-row step count `t` kept in the row
  (slots ``[m (D), v (D), t (1)]``, `S = 2D + 1`)::

      m += (1 - beta1)(g - m);  v += (1 - beta2)(g² - v);  t += 1
      w -= lr * sqrt(1 - beta2^t) / (1 - beta1^t) * m / (sqrt(v) + eps)

  SparseAdam counts steps per parameter tensor; counting per row makes the bias correction
  depend only on how often that row was trained, which is what a row-sharded table can keep.
  The two agree whenever every row is touched by every step. `t` is a float32 and stays exact
  up to 2^24 steps of one row, where the correction is 1 to float precision anyway.
- `Ftrl`: FTRL-Proximal (McMahan et al. 2013, Algorithm 1), per coordinate, slots
  ``[z (D), n (D)]``, `S = 2D`::

      sigma = (sqrt(n + g²) - sqrt(n)) / alpha;  z += g - sigma * w;  n += g²
      w = 0 if |z| <= l1 else -(z - sign(z) * l1) / ((beta + sqrt(n)) / alpha + l2)

  The initial `z` is chosen so that the formula gives back the row's initial vector
  (``z0 = -(w0 * q0 + sign(w0) * l1)`` with ``q0 = beta / alpha + l2``); a zero-initialised
  FTRL table would leave every embedding at zero. With ``beta = l2 = 0`` that is impossible
  and `z0 = 0`.
"""

from __future__ import annotations

import abc

import numpy as np

from freshrec.table.config import (
    AdagradConfig,
    AdamConfig,
    FtrlConfig,
    OptimizerConfig,
    SgdConfig,
)
from freshrec.table.records import FloatArray

__all__ = ["Adagrad", "Adam", "Ftrl", "Optimizer", "Sgd", "make_optimizer"]


class Optimizer(abc.ABC):
    """A per-row optimizer."""

    @abc.abstractmethod
    def state_width(self, dim: int) -> int:
        """Slots per row, `S`, for vectors of `dim` columns."""

    @abc.abstractmethod
    def initial_state(self, vectors: FloatArray) -> FloatArray:
        """Slots of rows that start at `vectors`.

        Args:
            vectors: `(U, D)` float32 initial vectors.

        Returns:
            `(U, S)` float32.
        """

    @abc.abstractmethod
    def step(self, vectors: FloatArray, state: FloatArray, grads: FloatArray) -> None:
        """Apply one update in place.

        Args:
            vectors: `(U, D)` float32, updated in place.
            state: `(U, S)` float32, updated in place.
            grads: `(U, D)` float32 gradients, summed over each row's occurrences.
        """


class Sgd(Optimizer):
    """Plain SGD."""

    def __init__(self, config: SgdConfig) -> None:
        self.lr = np.float32(config.lr)

    def state_width(self, dim: int) -> int:
        return 0

    def initial_state(self, vectors: FloatArray) -> FloatArray:
        return np.zeros((vectors.shape[0], 0), dtype=np.float32)

    def step(self, vectors: FloatArray, state: FloatArray, grads: FloatArray) -> None:
        vectors -= self.lr * grads


class Adagrad(Optimizer):
    """Adagrad as `torch.optim.Adagrad` applies it to sparse gradients."""

    def __init__(self, config: AdagradConfig) -> None:
        self.lr = np.float32(config.lr)
        self.eps = np.float32(config.eps)
        self.initial_accumulator = np.float32(config.initial_accumulator)

    def state_width(self, dim: int) -> int:
        return dim

    def initial_state(self, vectors: FloatArray) -> FloatArray:
        return np.full(vectors.shape, self.initial_accumulator, dtype=np.float32)

    def step(self, vectors: FloatArray, state: FloatArray, grads: FloatArray) -> None:
        state += grads * grads
        vectors -= self.lr * (grads / (np.sqrt(state) + self.eps))


class Adam(Optimizer):
    """Adam with a per-row step count (`torch.optim.SparseAdam`'s arithmetic)."""

    def __init__(self, config: AdamConfig) -> None:
        self.lr = config.lr
        self.beta1 = config.beta1
        self.beta2 = config.beta2
        self.eps = np.float32(config.eps)

    def state_width(self, dim: int) -> int:
        return 2 * dim + 1

    def initial_state(self, vectors: FloatArray) -> FloatArray:
        return np.zeros((vectors.shape[0], 2 * vectors.shape[1] + 1), dtype=np.float32)

    def step(self, vectors: FloatArray, state: FloatArray, grads: FloatArray) -> None:
        dim = vectors.shape[1]
        m = state[:, :dim]
        v = state[:, dim : 2 * dim]
        m += (grads - m) * np.float32(1.0 - self.beta1)
        v += (grads * grads - v) * np.float32(1.0 - self.beta2)
        state[:, 2 * dim] += np.float32(1.0)
        t = state[:, 2 * dim].astype(np.float64)
        bias1 = 1.0 - np.power(self.beta1, t)
        bias2 = 1.0 - np.power(self.beta2, t)
        step_size = (self.lr * np.sqrt(bias2) / bias1).astype(np.float32)
        vectors -= step_size[:, None] * (m / (np.sqrt(v) + self.eps))


class Ftrl(Optimizer):
    """FTRL-Proximal per coordinate."""

    def __init__(self, config: FtrlConfig) -> None:
        self.alpha = np.float32(config.alpha)
        self.beta = np.float32(config.beta)
        self.l1 = np.float32(config.l1)
        self.l2 = np.float32(config.l2)

    def state_width(self, dim: int) -> int:
        return 2 * dim

    def initial_state(self, vectors: FloatArray) -> FloatArray:
        q0 = self.beta / self.alpha + self.l2
        state = np.zeros((vectors.shape[0], 2 * vectors.shape[1]), dtype=np.float32)
        if q0 > 0:
            state[:, : vectors.shape[1]] = -(vectors * q0 + np.sign(vectors) * self.l1)
        return state

    def step(self, vectors: FloatArray, state: FloatArray, grads: FloatArray) -> None:
        dim = vectors.shape[1]
        z = state[:, :dim]
        n = state[:, dim:]
        n_new = n + grads * grads
        sigma = (np.sqrt(n_new) - np.sqrt(n)) / self.alpha
        z += grads - sigma * vectors
        n[...] = n_new
        shrunk = np.abs(z) > self.l1
        denom = (self.beta + np.sqrt(n)) / self.alpha + self.l2
        # A zero denominator only arises with beta = l2 = 0 and n = 0, i.e. a zero gradient on a
        # fresh row; the weight is then 0 by the |z| <= l1 branch or by convention.
        safe = np.where(denom > 0, denom, np.float32(1.0))
        w = np.where(shrunk & (denom > 0), -(z - np.sign(z) * self.l1) / safe, np.float32(0.0))
        vectors[...] = w.astype(np.float32, copy=False)


def make_optimizer(config: OptimizerConfig) -> Optimizer:
    """The optimizer a table config names."""
    if isinstance(config, SgdConfig):
        return Sgd(config)
    if isinstance(config, AdagradConfig):
        return Adagrad(config)
    if isinstance(config, AdamConfig):
        return Adam(config)
    if isinstance(config, FtrlConfig):
        return Ftrl(config)
    raise TypeError(f"unknown optimizer {type(config).__name__}")
