"""HTTP plumbing every freshrec service shares: errors, health, metrics and API keys."""

from freshrec.api.app import ReadinessCheck, install_common
from freshrec.api.auth import api_key_guard

__all__ = ["ReadinessCheck", "api_key_guard", "install_common"]
