"""Hot reload of the published dense model: serve the old version until the new one is loaded."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from prometheus_client import Counter, Gauge

from freshrec.errors import FreshrecError
from freshrec.models import ModelConfig, RankingModel
from freshrec.models.model import MODEL_FORMAT
from freshrec.models.published import PUBLISHED_VERSION_KEY, load_published_dense
from freshrec.table.base import TableBackend

__all__ = ["LoadedModel", "ModelHolder"]

logger = logging.getLogger(__name__)

MODEL_VERSION = Gauge("freshrec_ranker_model_version", "Dense model version being served.")
MODEL_RELOADS = Counter("freshrec_ranker_model_reloads_total", "Dense model versions loaded.")
MODEL_AGE = Gauge(
    "freshrec_ranker_model_published_timestamp_seconds",
    "When the served dense model was published (unix s).",
)


@dataclass(frozen=True)
class LoadedModel:
    """A fully loaded dense model and what serving needs to know about it."""

    model: RankingModel
    version: int
    logit_offset: float
    published_at: float


class ModelHolder:
    """Holds the current dense model; `refresh` swaps in a newer published version."""

    def __init__(self, backend: TableBackend) -> None:
        """Hold the model published through `backend` (none until `refresh` finds one)."""
        self._backend = backend
        self._current: LoadedModel | None = None
        self._refused: int | None = None  # a version of another format, warned about once

    @property
    def current(self) -> LoadedModel | None:
        """The model being served (None until the trainer's first publish)."""
        return self._current

    def refresh(self) -> bool:
        """Load the published model if its version differs from the served one.

        Returns:
            True when a new version was swapped in.
        """
        raw = self._backend.get_hash(PUBLISHED_VERSION_KEY).get("version")
        if raw is None:
            return False
        version = int(raw)
        if self._current is not None and self._current.version == version:
            return False
        if version == self._refused:
            return False
        try:
            published = load_published_dense(self._backend)
        except FreshrecError as exc:
            logger.warning(
                "published model unreadable, keeping version %s: %s", self._version(), exc
            )
            return False
        if published is None:
            return False
        loaded_version, params, meta = published
        found = int(meta.get("model_format", 1))
        if found != MODEL_FORMAT:
            self._refused = loaded_version
            logger.warning(
                "published model version %d has format %d, this ranker serves format %d; "
                "keeping version %s",
                loaded_version,
                found,
                MODEL_FORMAT,
                self._version(),
            )
            return False
        model = RankingModel(ModelConfig(**meta["model"]))
        model.load_state_dict(params)
        model.eval()
        # one reference assignment: requests see either the old or the new model, whole
        self._current = LoadedModel(
            model, loaded_version, float(meta["logit_offset"]), float(meta["published_at"])
        )
        MODEL_VERSION.set(loaded_version)
        MODEL_RELOADS.inc()
        MODEL_AGE.set(float(meta["published_at"]))
        logger.info("serving dense model version %d", loaded_version)
        return True

    def _version(self) -> int | None:
        return None if self._current is None else self._current.version

    def wait_for_first(self, timeout_s: float) -> bool:
        """Poll until a model is loaded or `timeout_s` passes."""
        deadline = time.monotonic() + timeout_s
        while self._current is None and time.monotonic() < deadline:
            if not self.refresh():
                time.sleep(0.2)
        return self._current is not None
