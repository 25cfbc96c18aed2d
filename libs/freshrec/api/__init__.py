"""HTTP plumbing every freshrec service shares: errors, health, metrics and API keys."""

from freshrec.api.app import ReadinessCheck, freeze_startup_heap, install_common, run_service, serve
from freshrec.api.auth import api_key_guard

__all__ = [
    "ReadinessCheck",
    "api_key_guard",
    "freeze_startup_heap",
    "install_common",
    "run_service",
    "serve",
]
