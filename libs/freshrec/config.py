"""`StrictModel`: the base of every validated configuration and on-disk record model.

Unknown fields are refused (a typo in a config file is an error, not a silent default) and
instances are frozen (a config handed to a component cannot change under it).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

__all__ = ["StrictModel"]


class StrictModel(BaseModel):
    """A pydantic model that forbids unknown fields and is immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)
