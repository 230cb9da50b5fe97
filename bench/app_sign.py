"""The ceiling of token issuance: a Starlette route that signs one RS256 JWT per request."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from bench.micro import rs256_signer

_sign = rs256_signer()  # one key per worker, loaded once


async def token(request: Request) -> JSONResponse:
    jwt = _sign().decode()
    return JSONResponse({"access_token": jwt, "token_type": "Bearer", "expires_in": 600})


app = Starlette(routes=[Route("/", token, methods=["GET"])])
