"""The JSON API for automation (a deploy pipeline, a chat bot), authenticated by API key alone
(never by the console's cookie, so no cross-site request can use it):

    GET   /api/v1/flags                  every flag                      read or admin key
    GET   /api/v1/flags/{name}           one flag and its audit history  read or admin key
    POST  /api/v1/flags                  create {"name", "reason", ...}  admin key
    PATCH /api/v1/flags/{name}           change {"reason", "expected_version", ...}  admin key

A change names the version it was based on (``expected_version``): a flag changed since (an
operator's kill) answers 409 with its current state, and nothing is written. Errors are
``{"error": "..."}`` with a 4xx that names the problem.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from polyshift.feature_flags.admin import Change, FlagChanged
from polyshift.feature_flags.model import validate_name, validate_percent
from polyshift.feature_flags.server.accounts import ApiKey
from polyshift.feature_flags.server.ofrep import MAX_BODY, OfrepError, authenticate
from polyshift.feature_flags.server.service import Service, public_error
from polyshift.framework.core.errors import PolyshiftError, UsageError

_BOOLS = ("enabled", "killed")
_TEXTS = {"description": 500, "owner": 100}
_LISTS = ("allow_add", "allow_remove", "deny_add", "deny_remove")
CHANGE_FIELDS = frozenset({"reason", "expected_version", "percent", *_BOOLS, *_TEXTS, *_LISTS})


class ApiError(Exception):
    def __init__(self, status: int, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status, self.message, self.extra = status, message, extra

    def response(self) -> Response:
        return JSONResponse({"error": self.message, **self.extra}, self.status)


def parse_change(data: dict[str, Any], *, create: bool) -> tuple[Change, str, int | None]:
    """(change, reason, expected version) from a request body; UsageError names the first problem."""
    allowed = CHANGE_FIELDS - {"expected_version"} | {"name"} if create else CHANGE_FIELDS
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise UsageError(f"unknown field(s) {', '.join(unknown)}; known: {', '.join(sorted(allowed))}")
    reason = data.get("reason")
    if not isinstance(reason, str) or not reason.strip() or len(reason) > 500:
        raise UsageError("'reason' is required: a non-empty string of at most 500 characters (it goes into the audit log)")
    expected: int | None = None
    if not create:
        if "expected_version" not in data:
            raise UsageError("'expected_version' is required: the version your change is based on (GET the flag first)")
        expected = data["expected_version"]
        if not isinstance(expected, int) or isinstance(expected, bool) or expected < 0:
            raise UsageError(f"'expected_version' must be a non-negative integer, got {expected!r}")
    fields: dict[str, Any] = {}
    for key in _BOOLS:
        if key in data:
            if not isinstance(data[key], bool):
                raise UsageError(f"'{key}' must be true or false, got {data[key]!r}")
            fields[key] = data[key]
    if "percent" in data:
        if isinstance(data["percent"], bool) or not isinstance(data["percent"], int | float):
            raise UsageError(f"'percent' must be a number from 0 to 100, got {data['percent']!r}")
        fields["percent"] = validate_percent(data["percent"])
    for key, limit in _TEXTS.items():
        if key in data:
            if not isinstance(data[key], str) or len(data[key]) > limit:
                raise UsageError(f"'{key}' must be a string of at most {limit} characters")
            fields[key] = data[key]
    for key in _LISTS:
        if key in data:
            value = data[key]
            if not isinstance(value, list) or not all(isinstance(s, str) and 0 < len(s) <= 200 for s in value):
                raise UsageError(f"'{key}' must be a list of subject keys (strings of 1-200 characters)")
            fields[key] = tuple(value)
    change = Change(**fields)
    if change == Change() and not create:
        raise UsageError("nothing to change: send at least one of " + ", ".join(sorted(CHANGE_FIELDS - {"reason", "expected_version"})))
    return change, reason.strip(), expected


def routes(service: Service) -> list[Route]:
    def key_for(request: Request, *, write: bool) -> ApiKey:
        try:
            key = authenticate(service, request, "api")
        except OfrepError as exc:
            raise ApiError(exc.status, exc.details) from None
        if write and not key.scope.can_write:
            why = f"API key {key.name!r} has scope {key.scope.value}; changing flags needs an admin key"
            service.refusals.record(who=key.actor, action="api.refused", path=request.url.path, why=why, status=403)
            raise ApiError(403, why)
        return key

    async def body(request: Request) -> dict[str, Any]:
        if not request.headers.get("content-type", "").startswith("application/json"):
            raise ApiError(415, "send the body as application/json")
        raw = await request.body()
        if len(raw) > MAX_BODY:
            raise ApiError(413, f"request body is {len(raw)} bytes; the limit is {MAX_BODY}")
        try:
            data = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ApiError(400, f"request body is not JSON: {exc}") from None
        if not isinstance(data, dict):
            raise ApiError(400, f"request body must be a JSON object, got {type(data).__name__}")
        return data

    async def list_flags(request: Request) -> Response:
        try:
            key_for(request, write=False)
            _version, flags = await run_in_threadpool(service.admin.store.load)
        except ApiError as exc:
            return exc.response()
        except PolyshiftError as exc:
            return ApiError(503, public_error(exc)).response()
        return JSONResponse([f.to_json() for f in sorted(flags.values(), key=lambda f: f.name)])

    async def get_flag(request: Request) -> Response:
        name = request.path_params["name"]
        try:
            key_for(request, write=False)
            validate_name(name)
            flag = await run_in_threadpool(service.admin.store.get, name)
            if flag is None:
                raise ApiError(404, f"flag {name!r} does not exist")
            history = await run_in_threadpool(service.admin.history, name)
        except ApiError as exc:
            return exc.response()
        except UsageError as exc:
            return ApiError(400, str(exc)).response()
        except PolyshiftError as exc:
            return ApiError(503, public_error(exc)).response()
        return JSONResponse(flag.to_json() | {"history": [
            {k: e[k] for k in ("seq", "at", "actor", "action", "detail")} for e in history]})

    async def write(request: Request, name: str | None) -> Response:
        try:
            key = key_for(request, write=True)
            data = await body(request)
            create = name is None
            if create:
                name = data.get("name")
                if not isinstance(name, str):
                    raise UsageError("'name' is required: the new flag's name")
            assert name is not None
            validate_name(name)
            change, reason, expected = parse_change(data, create=create)
            flag = await run_in_threadpool(lambda: service.admin.change(
                name, change, reason=reason, create=create, who=key.actor, expected_version=expected, via="api"))
        except ApiError as exc:
            return exc.response()
        except FlagChanged as exc:
            if exc.flag is None:
                return ApiError(404, f"flag {name!r} does not exist (create it with POST /api/v1/flags)").response()
            return ApiError(409, str(exc), current=exc.flag.to_json()).response()
        except UsageError as exc:
            return ApiError(400, str(exc)).response()
        except PolyshiftError as exc:
            return ApiError(503, public_error(exc)).response()
        service.changed()
        return JSONResponse(flag.to_json(), 201 if create else 200)

    async def create_flag(request: Request) -> Response:
        return await write(request, None)

    async def patch_flag(request: Request) -> Response:
        return await write(request, request.path_params["name"])

    return [
        Route("/api/v1/flags", list_flags, methods=["GET"]),
        Route("/api/v1/flags", create_flag, methods=["POST"]),
        Route("/api/v1/flags/{name}", get_flag, methods=["GET"]),
        Route("/api/v1/flags/{name}", patch_flag, methods=["PATCH"]),
    ]
