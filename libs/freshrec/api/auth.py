"""Bearer API keys, on when `FRESHREC_API_KEYS` lists any."""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, Sequence

from fastapi import Request
from pydantic import SecretStr

from freshrec.errors import Unauthorized

__all__ = ["api_key_guard"]


def api_key_guard(keys: Sequence[SecretStr]) -> Callable[[Request], Awaitable[None]]:
    """A FastAPI dependency that accepts a request only with one of `keys`.

    Args:
        keys: the accepted keys; when empty, every request is accepted.

    Returns:
        A dependency raising `Unauthorized` on a missing or wrong `Authorization: Bearer` key.
    """
    accepted = [k.get_secret_value().encode() for k in keys]

    # async although it never awaits: FastAPI runs a plain `def` dependency in its thread
    # pool, a thread hop per request for a few string comparisons
    async def guard(request: Request) -> None:
        if not accepted:
            return
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise Unauthorized("missing API key: send 'Authorization: Bearer <key>'")
        given = token.strip().encode()
        # compare_digest on every key: timing does not reveal which key nearly matched
        if not any([hmac.compare_digest(given, key) for key in accepted]):
            raise Unauthorized("wrong API key")

    return guard
