"""Bearer API keys, on when `FRESHREC_API_KEYS` lists any."""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, Sequence
from typing import Annotated

from fastapi import Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import SecretStr

from freshrec.errors import Unauthorized

__all__ = ["api_key_guard"]

# auto_error off: a missing key is answered by the guard, as an `Unauthorized` in freshrec's
# error shape; the scheme is there so the OpenAPI document says which routes need a key
_bearer = HTTPBearer(
    scheme_name="apiKey",
    description="One of the keys in FRESHREC_API_KEYS, as `Authorization: Bearer <key>`.",
    auto_error=False,
)

Credentials = Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)]


def api_key_guard(keys: Sequence[SecretStr]) -> Callable[..., Awaitable[None]]:
    """A FastAPI dependency that accepts a request only with one of `keys`.

    Args:
        keys: the accepted keys; when empty, every request is accepted (and the routes it
            guards declare no security scheme).

    Returns:
        A dependency raising `Unauthorized` on a missing or wrong `Authorization: Bearer` key.
    """
    accepted = [k.get_secret_value().encode() for k in keys]

    # async although they never await: FastAPI runs a plain `def` dependency in its thread
    # pool, a thread hop per request for a few string comparisons
    async def open_door() -> None:
        return None

    async def guard(credentials: Credentials) -> None:
        if credentials is None:
            raise Unauthorized("missing API key: send 'Authorization: Bearer <key>'")
        given = credentials.credentials.encode()
        # compare_digest on every key: timing does not reveal which key nearly matched
        if not any([hmac.compare_digest(given, key) for key in accepted]):
            raise Unauthorized("wrong API key")

    return guard if accepted else open_door
