"""The ASGI application of ``polyshift serve``: OFREP, the JSON API and the console on one port."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from polyshift.feature_flags.server import api, console, ofrep
from polyshift.feature_flags.server.service import Service

log = logging.getLogger("polyshift.serve")

_CSP = ("default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'")


class SecurityHeaders:
    """Headers every response carries; console pages are never cached and never framed."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        machine = scope["path"].startswith(("/ofrep/", "/api/"))

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.append((b"x-content-type-options", b"nosniff"))
                if not machine:
                    headers += [(b"content-security-policy", _CSP.encode()), (b"x-frame-options", b"DENY"),
                                (b"referrer-policy", b"same-origin")]
                    if not scope["path"].endswith(".css"):
                        headers.append((b"cache-control", b"no-store"))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, with_headers)


def create_app(service: Service) -> Starlette:
    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            service.close()

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        path = request.url.path
        if exc.status_code == 405:
            why = f"{request.method} is not allowed on {path}"
        elif exc.status_code == 404:
            why = f"nothing at {path}"
        else:
            why = exc.detail
        headers = dict(exc.headers or {})
        if path.startswith("/ofrep/"):
            body = {"errorCode": "GENERAL", "errorDetails": why}
            return Response(json.dumps(body), exc.status_code, headers=headers, media_type="application/json")
        if path.startswith("/api/"):
            return Response(json.dumps({"error": why}), exc.status_code, headers=headers, media_type="application/json")
        return HTMLResponse(console.page("problem.html", exc.status_code, session=None, error=why, heading=str(exc.status_code),
                                         status=exc.status_code).body, exc.status_code, headers=headers)

    async def server_error(request: Request, exc: Exception) -> Response:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        body = {"errorDetails": "an internal error occurred; the server log has the traceback"}
        if request.url.path.startswith("/ofrep/"):
            body["errorCode"] = "GENERAL"
        return Response(json.dumps(body), 500, media_type="application/json")

    middleware = [Middleware(SecurityHeaders)]
    if service.settings.cors_origins:
        # Only browsers on these origins may read OFREP answers; credentials (the console's cookie)
        # are never allowed cross-origin.
        middleware.append(Middleware(CORSMiddleware, allow_origins=list(service.settings.cors_origins),
                                     allow_methods=["GET", "POST"], allow_headers=["Authorization", "X-API-Key", "Content-Type",
                                                                                    "If-None-Match"],
                                     expose_headers=["ETag"], allow_credentials=False, max_age=600))
    return Starlette(
        routes=[*ofrep.routes(service), *api.routes(service), *console.routes(service)],
        middleware=middleware,
        exception_handlers={HTTPException: http_error, Exception: server_error},
        lifespan=lifespan,
    )
