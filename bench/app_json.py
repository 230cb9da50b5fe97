"""The ceiling of a Starlette worker: a route returning a small JSON, nothing else."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route


async def hello(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok", "service": "bench"})


app = Starlette(routes=[Route("/", hello, methods=["GET"])])
