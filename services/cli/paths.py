"""Where the checkout is: the one place the command line looks above its own files."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["checkout_dir", "deploy_dir"]


def checkout_dir() -> Path:
    """The checkout `services/` is imported from (its `libs/`, `deploy/` sit beside it)."""
    return Path(__file__).resolve().parents[2]


def deploy_dir() -> Path:
    """`deploy/local` of the checkout, or `FRESHREC_DEPLOY_DIR` when that is set."""
    configured = os.environ.get("FRESHREC_DEPLOY_DIR")
    if configured:
        return Path(configured)
    return checkout_dir() / "deploy" / "local"
