"""The JSON shape of every error a freshrec service answers with."""

from __future__ import annotations

__all__ = ["error_body"]


def error_body(error: str, message: str, details: object = None) -> dict[str, object]:
    """The JSON shape of every error freshrec answers with."""
    body: dict[str, object] = {"error": error, "message": message}
    if details is not None:
        body["details"] = details
    return body
