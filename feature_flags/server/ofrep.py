"""OFREP, the OpenFeature Remote Evaluation Protocol (OpenAPI ``service/openapi.yaml`` of
open-feature/protocol, v0.3.0): any language's generic OFREP provider evaluates polyshift flags.

    POST /ofrep/v1/evaluate/flags/{key}   one flag      200 | 400 | 401 | 403 | 404
    POST /ofrep/v1/evaluate/flags         every flag    200 (ETag) | 304 (If-None-Match) | 400 | 401 | 403
    GET  /ofrep/v1/configuration          capabilities  200 (ETag) | 304 | 401 | 403

The configuration endpoint was dropped from the specification in 2025 (0.2.0) but providers
released before that still ask for it; it is served as the last version that defined it did.

Evaluation is the in-process client's (``CompiledFlag.evaluate``): the same bucket for a subject
here as in Python. The context's ``targetingKey`` is the subject; other attributes are accepted
and ignored (polyshift targets by subject key only). A flag that needs a subject (a partial
rollout) evaluated without one is TARGETING_KEY_MISSING, so the caller's default applies; flags
that are the same for everyone (off, killed, 0 or 100 percent) need none.

Failures: a body that is not JSON is PARSE_ERROR, a body or context of the wrong shape is
INVALID_CONTEXT (400); an unknown key is FLAG_NOT_FOUND (404); a store never loaded is GENERAL
(503). A missing ``context`` is read as an empty one: the Python provider sends ``{}`` when the
application passes no context.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from polyshift.feature_flags.model import NAME, NO_SUBJECT, CompiledFlag, Evaluation
from polyshift.feature_flags.server.accounts import ApiKey
from polyshift.feature_flags.server.service import Service

MAX_BODY = 64 * 1024
JSON = "application/json"


class OfrepError(Exception):
    def __init__(self, status: int, code: str | None, details: str, key: str | None = None) -> None:
        super().__init__(details)
        self.status, self.code, self.details, self.key = status, code, details, key

    def response(self) -> Response:
        body: dict[str, Any] = {}
        if self.key is not None:
            body["key"] = self.key
        if self.code is not None:
            body["errorCode"] = self.code
        body["errorDetails"] = self.details
        headers = {"WWW-Authenticate": 'Bearer realm="polyshift"'} if self.status == 401 else None
        return Response(json.dumps(body), self.status, headers=headers, media_type=JSON)


def bearer(request: Request) -> str | None:
    """The API key a request carries: ``Authorization: Bearer KEY`` or ``X-API-Key: KEY``."""
    header = request.headers.get("authorization")
    if header is not None:
        scheme, _, token = header.partition(" ")
        return token.strip() if scheme.lower() == "bearer" and token.strip() else ""
    return request.headers.get("x-api-key")


def authenticate(service: Service, request: Request, action: str) -> ApiKey:
    secret = bearer(request)
    where = request.client.host if request.client else "unknown"
    if secret is None:
        why = "no API key: send 'Authorization: Bearer <key>' (create one with 'polyshift apikeys create NAME --scope read')"
    elif secret == "":
        why = "the Authorization header is not 'Bearer <key>'"
    else:
        key = service.keys.lookup(secret)
        if key is not None:
            return key
        why = "the API key is not valid (unknown or revoked)"
    service.refusals.record(who=f"anonymous@{where}", action=f"{action}.refused", path=request.url.path, why=why, status=401)
    raise OfrepError(401, None, why)


async def read_context(request: Request, key: str | None = None) -> str | None:
    """The targeting key of the request's evaluation context (None: none given)."""
    body = await request.body()
    if len(body) > MAX_BODY:
        raise OfrepError(413, "INVALID_CONTEXT", f"request body is {len(body)} bytes; the limit is {MAX_BODY}", key)
    if not body.strip():
        return None
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise OfrepError(400, "PARSE_ERROR", f"request body is not JSON: {exc}", key) from None
    if not isinstance(data, dict):
        raise OfrepError(400, "INVALID_CONTEXT", f"request body must be an object with 'context', got {type(data).__name__}", key)
    context = data.get("context", {})
    if not isinstance(context, dict):
        raise OfrepError(400, "INVALID_CONTEXT", f"'context' must be an object, got {type(context).__name__}", key)
    subject = context.get("targetingKey")
    if subject is not None and not isinstance(subject, str):
        raise OfrepError(400, "INVALID_CONTEXT", f"'context.targetingKey' must be a string, got {type(subject).__name__}", key)
    return subject


def success(key: str, compiled: CompiledFlag, evaluation: Evaluation, version: int, stale: bool) -> dict[str, Any]:
    flag = compiled.flag
    metadata: dict[str, Any] = {"version": flag.version, "percent": flag.percent, "detail": evaluation.detail}
    if flag.release:
        metadata["release"] = flag.release
    if stale:
        metadata["stale"] = True  # the store is unreachable: the last values this server knew
    return {"key": key, "value": evaluation.value, "reason": evaluation.reason.value, "variant": evaluation.variant,
            "metadata": metadata}


class Fragments:
    """The JSON of each (flag, outcome) pair of one flag-set version, made once: a flag has at most
    nine outcomes (model.py, each a module constant), so a bulk answer is evaluations and string
    joins rather than fifty dicts encoded per request."""

    def __init__(self) -> None:
        self._version = -2
        self._cache: dict[tuple[str, int, bool], str] = {}
        self.ordered: list[tuple[str, CompiledFlag]] = []

    def refresh(self, version: int, flags: dict[str, CompiledFlag]) -> None:
        if version != self._version:  # a new flag set: the old fragments can never be asked for again
            self._cache, self.ordered, self._version = {}, sorted(flags.items()), version

    def get(self, key: str, compiled: CompiledFlag, evaluation: Evaluation, version: int, stale: bool) -> str:
        """The answer's JSON; ``refresh`` with this version's flags comes first."""
        ident = (key, id(evaluation), stale)
        text = self._cache.get(ident)
        if text is None:
            text = self._cache[ident] = json.dumps(success(key, compiled, evaluation, version, stale))
        return text


def etag(version: int, subject: str | None) -> str:
    """Changes when any flag changes (the store's version) and differs per subject (each subject
    has its own evaluations), so a client's cached bulk answer revalidates with one comparison."""
    who = hashlib.blake2b((subject if subject is not None else "\0none").encode(), digest_size=8).hexdigest()
    return f'"{version}-{who}"'


def matches(if_none_match: str | None, tag: str) -> bool:
    if not if_none_match:
        return False
    candidates = [c.strip().removeprefix("W/") for c in if_none_match.split(",")]
    return "*" in candidates or tag in candidates


def routes(service: Service) -> list[Route]:
    fragments = Fragments()

    async def evaluate_one(request: Request) -> Response:
        key = request.path_params["key"]
        try:
            authenticate(service, request, "ofrep")
            subject = await read_context(request, key)
            version, flags = service.client.snapshot()
            fragments.refresh(version, flags)
            compiled = flags.get(key)
            if compiled is None:
                if version < 0:
                    raise OfrepError(503, "GENERAL", "the flag store has been unreachable since this server started", key)
                why = f"flag {key!r} was not found" if NAME.match(key) else \
                    f"flag {key!r} was not found: flag keys are 1-100 characters of [a-z0-9_.-]"
                raise OfrepError(404, "FLAG_NOT_FOUND", why, key)
            evaluation = compiled.evaluate(subject)
            if evaluation is NO_SUBJECT:
                raise OfrepError(400, "TARGETING_KEY_MISSING",
                                 f"flag {key!r} is rolled out to {compiled.flag.percent:g}% of subjects: "
                                 "send context.targetingKey to be bucketed", key)
        except OfrepError as exc:
            return exc.response()
        return Response(fragments.get(key, compiled, evaluation, version, service.client.stale), media_type=JSON)

    async def evaluate_all(request: Request) -> Response:
        try:
            authenticate(service, request, "ofrep")
            subject = await read_context(request)
            version, flags = service.client.snapshot()
            if version < 0:
                raise OfrepError(503, "GENERAL", "the flag store has been unreachable since this server started")
        except OfrepError as exc:
            return exc.response()
        tag = etag(version, subject)
        if matches(request.headers.get("if-none-match"), tag):
            return Response(status_code=304, headers={"ETag": tag})
        stale = service.client.stale
        fragments.refresh(version, flags)
        items: list[str] = []
        for key, compiled in fragments.ordered:
            evaluation = compiled.evaluate(subject)
            if evaluation is NO_SUBJECT:
                items.append(json.dumps({"key": key, "errorCode": "TARGETING_KEY_MISSING", "errorDetails":
                                         f"flag {key!r} is a {compiled.flag.percent:g}% rollout: send context.targetingKey"}))
            else:
                items.append(fragments.get(key, compiled, evaluation, version, stale))
        body = '{"flags": [' + ", ".join(items) + f'], "metadata": {{"version": {version}}}}}'
        return Response(body, media_type=JSON, headers={"ETag": tag})

    async def configuration(request: Request) -> Response:
        try:
            authenticate(service, request, "ofrep")
        except OfrepError as exc:
            return exc.response()
        interval_ms = int(service.flag_settings.refresh_interval * 1000)
        body = json.dumps({
            "name": "polyshift",
            "capabilities": {
                "cacheInvalidation": {"polling": {"enabled": True, "minPollingIntervalMs": interval_ms}},
                "flagEvaluation": {"supportedTypes": ["boolean"]},
            },
        }, sort_keys=True)
        tag = '"' + hashlib.blake2b(body.encode(), digest_size=8).hexdigest() + '"'
        if matches(request.headers.get("if-none-match"), tag):
            return Response(status_code=304, headers={"ETag": tag})
        return Response(body, media_type=JSON, headers={"ETag": tag})

    return [
        Route("/ofrep/v1/evaluate/flags/{key:path}", evaluate_one, methods=["POST"]),
        Route("/ofrep/v1/evaluate/flags", evaluate_all, methods=["POST"]),
        Route("/ofrep/v1/configuration", configuration, methods=["GET"]),
    ]
