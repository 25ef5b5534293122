"""The web console: server-rendered pages for product teams.

Sign-in with a user made by ``polyshift users add``; a session is a random token in an HttpOnly,
SameSite=Strict cookie (Secure over HTTPS, ``__Host-`` prefixed then), stored as a digest in the
control plane with its CSRF token. Every form carries that token and every POST checks it (and
the Origin header when the browser sends one); the sign-in form uses a double-submit token.
Viewers read; editors and admins change flags; admins manage API keys. Every flag edit is a
compare-and-set on the version the page showed: an edit made on a page loaded before someone
else's change (an operator's kill) is refused with who changed what, and nothing is written.
Every refusal is audited. Templates autoescape everything a user or store supplied.
"""

from __future__ import annotations

import hmac
import re
import secrets
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from polyshift.feature_flags.admin import Change, FlagChanged
from polyshift.feature_flags.model import Flag, validate_name, validate_percent
from polyshift.feature_flags.server import releases as release_views
from polyshift.feature_flags.server.accounts import Role, Session
from polyshift.feature_flags.server.service import STORE_LABELS, Service, public_error
from polyshift.framework.core.errors import PolyshiftError, UsageError

TEMPLATES = Path(__file__).parent / "templates"
LOGIN_COOKIE = "polyshift_login"
MAX_FORM = 32 * 1024
MAX_TEXT = 500
SUBJECT = re.compile(r"^[^\s,]{1,200}$")

_env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html"], default=True),
                   trim_blocks=True, lstrip_blocks=True)


def state(flag: Flag) -> str:
    if flag.killed:
        return "KILLED"
    if not flag.enabled:
        return "off"
    return f"on {flag.percent:g}%"


def state_class(flag: Flag) -> str:
    if flag.killed:
        return "killed"
    if not flag.enabled:
        return "off"
    return "on" if flag.percent >= 100 else "partial"


_env.globals.update(state=state, state_class=state_class)

# What a successful action says: fixed strings, so nothing from the request is reflected.
DONE = {
    "enable": "Turned on.", "disable": "Turned off.", "percent": "Percentage set.", "lists": "Lists updated.",
    "kill": "Killed: off for everyone.", "unkill": "Kill switch cleared.", "about": "Saved.", "created": "Flag created.",
    "revoked": "API key revoked.",
}


def page(name: str, code: int = 200, **context: Any) -> HTMLResponse:
    return HTMLResponse(_env.get_template(name).render(**context), status_code=code)


class Refused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


def routes(service: Service) -> list[Route]:
    settings = service.settings

    def secure(request: Request) -> bool:
        return request.url.scheme == "https" or settings.secure_cookies

    def cookie_name(request: Request) -> str:
        return "__Host-polyshift_session" if secure(request) else "polyshift_session"

    def client(request: Request) -> str:
        return request.client.host if request.client else "unknown"

    async def current(request: Request) -> tuple[str | None, Session | None]:
        token = request.cookies.get(cookie_name(request))
        if not token or len(token) > 200:
            return None, None
        return token, await run_in_threadpool(service.accounts.session, token)

    def refuse(request: Request, who: str, why: str, status: int, session: Session | None = None) -> HTMLResponse:
        service.refusals.record(who=who, action="console.refused", path=request.url.path, why=why, status=status)
        return page("problem.html", status, session=session, error=why, heading="Refused", status=status)

    async def read_form(request: Request) -> FormData:
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > MAX_FORM):
            raise Refused(413, f"the form is larger than {MAX_FORM} bytes")
        kind = request.headers.get("content-type", "")
        if not kind.startswith("application/x-www-form-urlencoded") and not kind.startswith("multipart/form-data"):
            raise Refused(415, "expected a form (application/x-www-form-urlencoded)")
        return await request.form(max_files=0, max_fields=50, max_part_size=MAX_FORM)

    def same_origin(request: Request) -> bool:
        origin = request.headers.get("origin")
        if origin is None:
            return True  # a client that sends no Origin: the CSRF token alone decides
        return urlsplit(origin).netloc == request.headers.get("host", "")

    Handler = Callable[[Request, Session, FormData], Awaitable[Response]]

    async def guarded(request: Request, need: Role, handler: Handler) -> Response:
        """A POST from a signed-in user with the role ``need`` and a valid CSRF token, or a refusal."""
        _token, session = await current(request)
        where = client(request)
        if session is None:
            return refuse(request, f"anonymous@{where}", "not signed in (or the session expired): sign in again", 401)
        who = session.user.name
        try:
            form = await read_form(request)
        except Refused as exc:
            return refuse(request, who, exc.message, exc.status, session)
        sent = form.get("csrf")
        if not same_origin(request) or not isinstance(sent, str) or not hmac.compare_digest(sent, session.csrf):
            return refuse(request, who, "the form's CSRF token is missing or wrong (reload the page and try again)", 403, session)
        if (need is Role.ADMIN and not session.user.role.can_admin) or (need is Role.EDITOR and not session.user.role.can_write):
            return refuse(request, who, f"role {session.user.role.value} may not do this (needs {need.value})", 403, session)
        return await handler(request, session, form)

    async def signed_in(request: Request) -> Session | Response:
        _token, session = await current(request)
        if session is None:
            return RedirectResponse(f"/login?next={quote(request.url.path)}", 303)
        return session

    # -- sign-in ---------------------------------------------------------------------------
    async def login_page(request: Request) -> Response:
        token = secrets.token_urlsafe(24)
        nxt = request.query_params.get("next", "/flags")
        response = page("login.html", login_csrf=token, next=nxt if _local(nxt) else "/flags", user="", session=None)
        response.set_cookie(LOGIN_COOKIE, token, max_age=3600, httponly=True, samesite="strict", secure=secure(request))
        return response

    async def login(request: Request) -> Response:
        where = client(request)
        try:
            form = await read_form(request)
        except Refused as exc:
            return refuse(request, f"anonymous@{where}", exc.message, exc.status)
        sent, cookie = form.get("csrf"), request.cookies.get(LOGIN_COOKIE)
        user, password, nxt = form.get("user"), form.get("password"), form.get("next")
        if not isinstance(sent, str) or not cookie or not hmac.compare_digest(sent, cookie) or not same_origin(request):
            return refuse(request, f"anonymous@{where}", "the sign-in form expired or did not come from this site: reload it", 403)
        if not isinstance(user, str) or not isinstance(password, str) or not user or not password:
            return refuse(request, f"anonymous@{where}", "sign-in needs a user and a password", 400)
        user = user[:100]
        wait = service.throttle.retry_after(f"user:{user}", f"addr:{where}")
        if wait > 0:
            response = refuse(request, f"{user}@{where}", f"too many failed sign-ins: try again in {int(wait // 60) + 1} minute(s)", 429)
            response.headers["Retry-After"] = str(int(wait) + 1)
            return response
        found = await run_in_threadpool(service.accounts.authenticate, user, password[:1000])
        if found is None:
            service.throttle.failed(f"user:{user}", f"addr:{where}")
            service.refusals.record(who=f"{user}@{where}", action="console.signin_failed", path="/login",
                                    why="wrong user or password", status=401)
            fresh = secrets.token_urlsafe(24)
            response = page("login.html", 401, login_csrf=fresh, next=nxt if isinstance(nxt, str) and _local(nxt) else "/flags",
                            user=user, error="Wrong user or password.", session=None)
            response.set_cookie(LOGIN_COOKIE, fresh, max_age=3600, httponly=True, samesite="strict", secure=secure(request))
            return response
        service.throttle.succeeded(f"user:{user}")
        token, _session = await run_in_threadpool(service.accounts.open_session, found, ttl=settings.session_seconds)
        await run_in_threadpool(service.state.audit, "console.signed_in", f"user:{found.name}", {"from": where}, who=found.name)
        done: Response = RedirectResponse(nxt if isinstance(nxt, str) and _local(nxt) else "/flags", 303)
        done.set_cookie(cookie_name(request), token, max_age=int(settings.session_seconds), httponly=True,
                            samesite="strict", secure=secure(request), path="/")
        done.delete_cookie(LOGIN_COOKIE)
        return done

    async def logout(request: Request) -> Response:
        async def done(request: Request, session: Session, form: FormData) -> Response:
            token = request.cookies.get(cookie_name(request))
            if token:
                await run_in_threadpool(service.accounts.close_session, token)
            response = RedirectResponse("/login", 303)
            response.delete_cookie(cookie_name(request), path="/", secure=secure(request), httponly=True, samesite="strict")
            return response
        return await guarded(request, Role.VIEWER, done)

    # -- flags -----------------------------------------------------------------------------
    async def flag_list(request: Request) -> Response:
        session = await signed_in(request)
        if isinstance(session, Response):
            return session
        return await list_page(session, 200, notice=DONE.get(request.query_params.get("done", "")))

    async def list_page(session: Session, status: int, *, error: str | None = None, notice: str | None = None) -> Response:
        try:
            _version, flags = await run_in_threadpool(service.admin.store.load)
        except PolyshiftError as exc:
            flags, status, error = {}, 503, public_error(exc)
        return page("flags.html", status, session=session, nav="flags", flags=sorted(flags.values(), key=lambda f: f.name),
                    store=STORE_LABELS[service.flag_settings.store], error=error, notice=notice)

    async def flag_page(request: Request) -> Response:
        session = await signed_in(request)
        if isinstance(session, Response):
            return session
        return await render_flag(request, session, request.path_params["name"],
                                 notice=DONE.get(request.query_params.get("done", "")))

    async def render_flag(request: Request, session: Session, name: str, *, status: int = 200, error: str | None = None,
                          notice: str | None = None) -> Response:
        try:
            validate_name(name)
            flag = await run_in_threadpool(service.admin.store.get, name)
        except UsageError as exc:
            return page("problem.html", 400, session=session, error=str(exc), heading="Not a flag", status=400)
        except PolyshiftError as exc:
            return page("problem.html", 503, session=session, error=public_error(exc), heading="Unavailable", status=503)
        if flag is None:
            return page("problem.html", 404, session=session, error=f"flag {name!r} does not exist", heading="Not found", status=404)
        entries = await run_in_threadpool(lambda: list(reversed(service.admin.history(name))))
        return page("flag.html", status, session=session, nav="flags", flag=flag, entries=entries, error=error, notice=notice)

    async def flag_change(request: Request) -> Response:
        name = request.path_params["name"]

        async def handle(request: Request, session: Session, form: FormData) -> Response:
            try:
                action, change, expected, reason = parse_change(form)
                validate_name(name)
            except UsageError as exc:
                return await render_flag(request, session, name, status=400, error=str(exc))
            try:
                await run_in_threadpool(lambda: service.admin.change(
                    name, change, reason=reason, who=session.user.name, expected_version=expected, via="console"))
            except FlagChanged as exc:
                return await render_flag(request, session, name, status=409, error=str(exc))
            except PolyshiftError as exc:
                return await render_flag(request, session, name, status=400 if isinstance(exc, UsageError) else 503,
                                         error=public_error(exc))
            service.changed()
            return RedirectResponse(f"/flags/{name}?done={action}", 303)
        return await guarded(request, Role.EDITOR, handle)

    async def flag_create(request: Request) -> Response:
        async def handle(request: Request, session: Session, form: FormData) -> Response:
            try:
                name = validate_name(_text(form, "name", required=True))
                reason = _text(form, "reason", required=True)
                change = Change(description=_text(form, "description"), owner=_text(form, "owner", limit=100))
                await run_in_threadpool(lambda: service.admin.change(
                    name, change, reason=reason, create=True, who=session.user.name, expected_version=None, via="console"))
            except FlagChanged:
                return await list_page(session, 409, error="a flag with that name exists already; nothing was changed")
            except PolyshiftError as exc:
                return await list_page(session, 400 if isinstance(exc, UsageError) else 503, error=public_error(exc))
            service.changed()
            return RedirectResponse(f"/flags/{name}?done=created", 303)
        return await guarded(request, Role.EDITOR, handle)

    # -- audit and releases ----------------------------------------------------------------
    async def audit(request: Request) -> Response:
        session = await signed_in(request)
        if isinstance(session, Response):
            return session
        subject = request.query_params.get("subject") or None
        entries = await run_in_threadpool(lambda: list(service.state.audit_entries(subject=subject)))
        return page("audit.html", session=session, nav="audit", entries=list(reversed(entries))[:500], total=len(entries),
                    subject=subject)

    async def release_list(request: Request) -> Response:
        session = await signed_in(request)
        if isinstance(session, Response):
            return session
        rows, problem = await run_in_threadpool(release_views.listing, service)
        live = any(str(r["last"]).startswith("in progress") for r in rows)
        return page("releases.html", session=session, nav="releases", releases=rows, problem=problem, refresh=5 if live else None)

    async def release_page(request: Request) -> Response:
        session = await signed_in(request)
        if isinstance(session, Response):
            return session
        version = request.path_params["version"]
        if not re.fullmatch(r"[0-9A-Za-z_.-]{1,64}", version):
            return page("problem.html", 400, session=session, error=f"{version!r} is not a release version", heading="Not a release",
                        status=400)
        view = await run_in_threadpool(release_views.detail, service, version)
        return page("release.html", session=session, nav="releases", version=version, row=view.row, problem=view.problem,
                    timeline=view.timeline, chart=Markup(view.chart), live=view.live, refresh=3 if view.live else None)

    # -- admin -----------------------------------------------------------------------------
    async def keys_page(request: Request) -> Response:
        session = await signed_in(request)
        if isinstance(session, Response):
            return session
        if not session.user.role.can_admin:
            return refuse(request, session.user.name, f"role {session.user.role.value} may not manage API keys (needs admin)", 403,
                          session)
        keys = await run_in_threadpool(service.accounts.list_keys)
        return page("keys.html", session=session, nav="keys", keys=keys, notice=DONE.get(request.query_params.get("done", "")))

    async def key_create(request: Request) -> Response:
        async def handle(request: Request, session: Session, form: FormData) -> Response:
            try:
                name = _text(form, "name", required=True, limit=100)
                scope = _text(form, "scope", required=True, limit=16)
                key, secret = await run_in_threadpool(lambda: service.accounts.create_key(name, scope, who=session.user.name))
            except PolyshiftError as exc:
                keys = await run_in_threadpool(service.accounts.list_keys)
                return page("keys.html", 400, session=session, nav="keys", keys=keys, error=public_error(exc))
            service.keys.reload()
            keys = await run_in_threadpool(service.accounts.list_keys)
            return page("keys.html", session=session, nav="keys", keys=keys, new_key=key, new_secret=secret)
        return await guarded(request, Role.ADMIN, handle)

    async def key_revoke(request: Request) -> Response:
        ident = request.path_params["ident"]

        async def handle(request: Request, session: Session, form: FormData) -> Response:
            try:
                if not re.fullmatch(r"[0-9a-f]{8}", ident):
                    raise UsageError(f"{ident!r} is not an API key id")
                await run_in_threadpool(lambda: service.accounts.revoke_key(ident, who=session.user.name))
            except PolyshiftError as exc:
                keys = await run_in_threadpool(service.accounts.list_keys)
                return page("keys.html", 400, session=session, nav="keys", keys=keys, error=public_error(exc))
            service.keys.reload()
            return RedirectResponse("/admin/keys?done=revoked", 303)
        return await guarded(request, Role.ADMIN, handle)

    async def users_page(request: Request) -> Response:
        session = await signed_in(request)
        if isinstance(session, Response):
            return session
        if not session.user.role.can_admin:
            return refuse(request, session.user.name, f"role {session.user.role.value} may not list users (needs admin)", 403, session)
        users = await run_in_threadpool(service.accounts.list_users)
        return page("users.html", session=session, nav="users", users=users)

    async def home(request: Request) -> Response:
        return RedirectResponse("/flags", 303)

    async def css(request: Request) -> Response:
        return Response((TEMPLATES / "console.css").read_text(), media_type="text/css",
                        headers={"Cache-Control": "public, max-age=300"})

    return [
        Route("/", home, methods=["GET"]),
        Route("/console.css", css, methods=["GET"]),
        Route("/login", login_page, methods=["GET"]),
        Route("/login", login, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
        Route("/flags", flag_list, methods=["GET"]),
        Route("/flags", flag_create, methods=["POST"]),
        Route("/flags/{name}", flag_page, methods=["GET"]),
        Route("/flags/{name}", flag_change, methods=["POST"]),
        Route("/audit", audit, methods=["GET"]),
        Route("/releases", release_list, methods=["GET"]),
        Route("/releases/{version}", release_page, methods=["GET"]),
        Route("/admin/keys", keys_page, methods=["GET"]),
        Route("/admin/keys", key_create, methods=["POST"]),
        Route("/admin/keys/{ident}/revoke", key_revoke, methods=["POST"]),
        Route("/admin/users", users_page, methods=["GET"]),
    ]


def _local(target: str) -> bool:
    """Only a path on this site may follow sign-in (no open redirect to another host)."""
    return target.startswith("/") and not target.startswith("//") and "\\" not in target and len(target) < 300


def _text(form: FormData, field: str, *, required: bool = False, limit: int = MAX_TEXT) -> str:
    value = form.get(field)
    if value is None or value == "":
        if required:
            raise UsageError(f"the form field '{field}' is required")
        return ""
    if not isinstance(value, str):
        raise UsageError(f"the form field '{field}' must be text")
    value = value.strip()
    if required and not value:
        raise UsageError(f"the form field '{field}' is required")
    if len(value) > limit:
        raise UsageError(f"the form field '{field}' is longer than {limit} characters")
    if any(ord(c) < 32 for c in value):
        raise UsageError(f"the form field '{field}' contains control characters")
    return value


def _subjects(form: FormData, field: str) -> tuple[str, ...]:
    raw = _text(form, field, limit=10_000)
    items = tuple(s for s in re.split(r"[\s,]+", raw) if s)
    for s in items:
        if not SUBJECT.match(s):
            raise UsageError(f"subject key {s[:40]!r} in '{field}' is longer than 200 characters")
    return items


def parse_change(form: FormData) -> tuple[str, Change, int, str]:
    """(action, change, the version the page showed, reason) from a flag page's form."""
    action = _text(form, "action", required=True, limit=20)
    reason = _text(form, "reason", required=True)
    raw_version = _text(form, "expected_version", required=True, limit=20)
    if not raw_version.isdigit():
        raise UsageError(f"expected_version must be the flag's version number, got {raw_version!r}")
    expected = int(raw_version)
    confirmed = form.get("confirm") == "yes"
    if action == "enable":
        change = Change(enabled=True)
    elif action == "disable":
        change = Change(enabled=False)
    elif action == "percent":
        change = Change(percent=validate_percent(_text(form, "percent", required=True, limit=20)))
    elif action == "lists":
        change = Change(allow_add=_subjects(form, "allow_add"), allow_remove=_subjects(form, "allow_remove"),
                        deny_add=_subjects(form, "deny_add"), deny_remove=_subjects(form, "deny_remove"))
        if change == Change():
            raise UsageError("name at least one subject key to add or remove")
    elif action in ("kill", "unkill"):
        if not confirmed:
            raise UsageError(f"{action} needs the confirmation box ticked; nothing was changed")
        change = Change(killed=action == "kill")
    elif action == "about":
        change = Change(description=_text(form, "description"), owner=_text(form, "owner", limit=100))
    else:
        raise UsageError(f"unknown action {action!r} (enable, disable, percent, lists, kill, unkill, about)")
    return action, change, expected, reason
