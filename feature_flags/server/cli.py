"""`polyshift serve`, `polyshift users …` and `polyshift apikeys …`.

Imports nothing of the web stack until ``serve`` runs, so the other commands start as fast as before.
"""

from __future__ import annotations

import ipaddress
import socket
import sys
from typing import TYPE_CHECKING

import typer

from polyshift.framework.cli import output
from polyshift.framework.cli.output import emit_json, say, table
from polyshift.framework.core.config import load_config
from polyshift.framework.core.errors import UsageError

if TYPE_CHECKING:
    from polyshift.feature_flags.server.accounts import Accounts

server_app = typer.Typer(no_args_is_help=True)
users_app = typer.Typer(no_args_is_help=True, help="Console accounts: add, remove, list.")
apikeys_app = typer.Typer(no_args_is_help=True, help="API keys for OFREP and the flags API: create, list, revoke.")
server_app.add_typer(users_app, name="users")
server_app.add_typer(apikeys_app, name="apikeys")


def _accounts() -> Accounts:
    from polyshift.feature_flags.server.accounts import Accounts
    from polyshift.framework.control.state import ControlPlane

    return Accounts(ControlPlane(load_config(output.opts["config"]).state_url))


def _actor() -> str:
    from polyshift.framework.control.state import actor

    return actor()


@server_app.command()
def serve(
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on (loopback unless told otherwise)."),
    port: int = typer.Option(8400, "--port", help="TCP port."),
    secure_cookies: bool = typer.Option(False, "--secure-cookies", help="Mark cookies Secure on plain HTTP (behind a TLS proxy)."),
    cors_origin: list[str] = typer.Option([], "--cors-origin", help="A browser origin allowed to call /ofrep (repeatable)."),
) -> None:
    """The flag service: OFREP for every language, a JSON API and the web console.  Example: polyshift serve --port 8400"""
    if not 0 < port < 65536:
        raise UsageError(f"--port must be between 1 and 65535, got {port}")
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    for origin in cors_origin:
        if not origin.startswith(("http://", "https://")) or origin.count("/") != 2:
            raise UsageError(f"--cors-origin {origin!r} must be an origin such as https://app.example.com (no path)")
    try:  # a clear refusal now rather than uvicorn's exit after the service has opened its stores
        with socket.create_server((host, port)):
            pass
    except OSError as exc:
        raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    import uvicorn

    from polyshift.feature_flags.server.app import create_app
    from polyshift.feature_flags.server.service import ServeSettings, Service

    settings = ServeSettings(host=host, port=port, secure_cookies=secure_cookies, cors_origins=tuple(cors_origin))
    service = Service(output.opts["config"], settings)
    if not loopback:
        output.warn(f"listening on {host}, not only on this machine: serve it behind TLS (and pass --secure-cookies if the "
                    "proxy does not send X-Forwarded-Proto)")
    shown = f"[{host}]" if ":" in host else host
    say("console  http://{host}:{port}/  (accounts: polyshift users add NAME --role editor)", host=shown, port=port)
    say("OFREP    http://{host}:{port}/ofrep/v1  (keys: polyshift apikeys create NAME --scope read)", host=shown, port=port)
    uvicorn.run(create_app(service), host=host, port=port, proxy_headers=True, forwarded_allow_ips="127.0.0.1",
                log_level="warning", server_header=False)


@users_app.command("add")
def users_add(
    name: str,
    role: str = typer.Option(..., "--role", help="viewer, editor or admin."),
    password_stdin: bool = typer.Option(False, "--password-stdin", help="Read the password from the first line of stdin."),
) -> None:
    """A console account.  Example: polyshift users add alice --role editor"""
    from polyshift.feature_flags.server.accounts import parse_role

    parse_role(role)  # a wrong role is refused before a password is asked for
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    elif sys.stdin.isatty():
        password = typer.prompt(f"password for {name}", hide_input=True, confirmation_prompt=True)
    else:
        raise UsageError("no terminal to ask for the password on: pass --password-stdin and write it to stdin")
    user = _accounts().add_user(name, role, password, who=_actor())
    if output.json_mode():
        emit_json({"name": user.name, "role": user.role.value})
        return
    say("user {name} added ({role})", name=user.name, role=user.role.value)


@users_app.command("remove")
def users_remove(name: str) -> None:
    """Remove an account and end its sessions.  Example: polyshift users remove alice"""
    _accounts().remove_user(name, who=_actor())
    if output.json_mode():
        emit_json({"name": name, "removed": True})
        return
    say("user {name} removed", name=name)


@users_app.command("list")
def users_list() -> None:
    """Every console account.  Example: polyshift users list --json"""
    rows = [{"name": u.name, "role": u.role.value, "created_at": u.created_at, "created_by": u.created_by}
            for u in _accounts().list_users()]
    if output.json_mode():
        emit_json(rows)
        return
    table("users", ["name", "role", "created"], [[r["name"], r["role"], f"{r['created_at']} by {r['created_by']}"] for r in rows])


@apikeys_app.command("create")
def apikeys_create(name: str, scope: str = typer.Option("read", "--scope", help="read (evaluate) or admin (also change flags).")) -> None:
    """A new API key, printed once.  Example: polyshift apikeys create checkout-service --scope read"""
    key, secret = _accounts().create_key(name, scope, who=_actor())
    if output.json_mode():
        emit_json({"key": secret, "id": key.id, "name": key.name, "scope": key.scope.value})
        return
    say("API key {name} ({scope}), id {id}: shown once, store it now:", name=key.name, scope=key.scope.value, id=key.id)
    say("{secret}", secret=secret)


@apikeys_app.command("list")
def apikeys_list() -> None:
    """Every API key (never the key itself).  Example: polyshift apikeys list"""
    rows = [{"id": k.id, "name": k.name, "scope": k.scope.value, "created_at": k.created_at, "created_by": k.created_by,
             "revoked_at": k.revoked_at, "revoked_by": k.revoked_by} for k in _accounts().list_keys()]
    if output.json_mode():
        emit_json(rows)
        return
    table("API keys", ["id", "name", "scope", "created", "revoked"],
          [[r["id"], r["name"], r["scope"], f"{r['created_at']} by {r['created_by']}",
            f"{r['revoked_at']} by {r['revoked_by']}" if r["revoked_at"] else ""] for r in rows])


@apikeys_app.command("revoke")
def apikeys_revoke(which: str) -> None:
    """Revoke a key by id or name; servers stop accepting it within one refresh interval.  Example: polyshift apikeys revoke ID"""
    key = _accounts().revoke_key(which, who=_actor())
    if output.json_mode():
        emit_json({"id": key.id, "name": key.name, "revoked": True})
        return
    say("API key {name} ({id}) revoked", name=key.name, id=key.id)
