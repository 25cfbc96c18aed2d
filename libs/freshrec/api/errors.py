"""The JSON shape of every error a freshrec service answers with, and its OpenAPI form."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

__all__ = ["ErrorBody", "ErrorDetail", "error_body", "error_response"]


class ErrorDetail(BaseModel):
    """One problem with a request."""

    field: str = Field(
        description="The field that is wrong, dotted for nested ones (`context.device`)."
    )
    reason: str = Field(description="Human-readable explanation.")
    type: str = Field(description="Stable machine-readable code (e.g. pydantic's error type).")
    index: int | None = Field(
        None, description="Position of the element in a posted list, when the field is in one."
    )


class ErrorBody(BaseModel):
    """The body of every error answer."""

    error: str = Field(description="The error's class, e.g. `InvalidInput` or `NotFound`.")
    message: str = Field(description="Human-readable explanation.")
    details: list[ErrorDetail] | None = Field(
        None, description="One entry per problem, for invalid input; absent otherwise."
    )


def error_body(error: str, message: str, details: object = None) -> dict[str, object]:
    """The JSON shape of every error freshrec answers with (`ErrorBody`)."""
    body: dict[str, object] = {"error": error, "message": message}
    if details is not None:
        body["details"] = details
    return body


_RETRY_AFTER: dict[str, Any] = {
    "Retry-After": {
        "description": "Seconds to wait before retrying.",
        "required": True,
        "schema": {"type": "integer", "minimum": 0},
    }
}


def error_response(description: str, *, retry_after: bool = False) -> dict[str, Any]:
    """One entry of a route's `responses`: an error answered with an `ErrorBody`.

    Args:
        description: when the status is answered.
        retry_after: the answer carries a `Retry-After` header (429, 503).
    """
    response: dict[str, Any] = {"description": description, "model": ErrorBody}
    if retry_after:
        response["headers"] = _RETRY_AFTER
    return response
