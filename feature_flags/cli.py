"""`polyshift flags …`: list, show, set, kill, history, check. Each change needs --reason and is audited."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import typer

from polyshift.feature_flags.model import validate_name
from polyshift.feature_flags.settings import flag_settings, open_store
from polyshift.framework.cli import output
from polyshift.framework.cli.output import emit_json, say, table
from polyshift.framework.core.config import load_config
from polyshift.framework.core.errors import StoreError, UsageError

# The admin writes the audit log through the control plane: imported by the commands
# that change or audit flags, so 'flags list' and 'polyshift --help' do not pay for it (issue 19).
if TYPE_CHECKING:
    from polyshift.feature_flags.admin import FlagAdmin

flags_app = typer.Typer(no_args_is_help=True, help="Feature flags that switch traffic between blue and green.")


def _admin() -> FlagAdmin:
    from polyshift.feature_flags.admin import FlagAdmin
    from polyshift.framework.control.state import ControlPlane

    config = load_config(output.opts["config"])
    return FlagAdmin(open_store(flag_settings(config)), ControlPlane(config.state_url))


def _describe(flag_json: dict) -> str:  # type: ignore[type-arg]
    if flag_json["killed"]:
        return "KILLED"
    if not flag_json["enabled"]:
        return "off"
    return f"on {flag_json['percent']:g}%"


@flags_app.command("list")
def flags_list() -> None:
    """Every flag with its state.  Example: polyshift flags list --json"""
    # Reading needs only the flag store: no control plane, hence no SQL driver for a Redis store.
    _, flags = open_store(flag_settings(load_config(output.opts["config"]))).load()
    rows = [f.to_json() for f in sorted(flags.values(), key=lambda f: f.name)]
    if output.json_mode():
        emit_json(rows)
        return
    table("flags", ["name", "state", "allow", "deny", "release", "owner", "version", "updated"],
          [[r["name"], _describe(r), len(r["allow"]), len(r["deny"]), r["release"] or "", r["owner"], r["version"],
            f"{r['updated_at']} by {r['updated_by']}"] for r in rows])


@flags_app.command("show")
def flags_show(name: str) -> None:
    """One flag in full.  Example: polyshift flags show checkout_v2"""
    flag = _admin().get(name).to_json()
    if output.json_mode():
        emit_json(flag)
        return
    for key, value in flag.items():
        say("{key:>12}: {value}", key=key, value=json.dumps(value) if isinstance(value, list) else value)


@flags_app.command("set")
def flags_set(
    name: str,
    reason: str = typer.Option(..., "--reason", help="Why: recorded in the audit log."),
    on: bool = typer.Option(False, "--on", help="Enable the flag."),
    off: bool = typer.Option(False, "--off", help="Disable the flag."),
    percent: float | None = typer.Option(None, "--percent", help="Rollout percentage, 0 to 100."),
    allow: list[str] = typer.Option([], "--allow", help="Add a subject key to the allow list (repeatable)."),
    deny: list[str] = typer.Option([], "--deny", help="Add a subject key to the deny list (repeatable)."),
    unallow: list[str] = typer.Option([], "--unallow", help="Remove a subject key from the allow list."),
    undeny: list[str] = typer.Option([], "--undeny", help="Remove a subject key from the deny list."),
    unkill: bool = typer.Option(False, "--unkill", help="Clear the kill switch."),
    description: str | None = typer.Option(None, "--description"),
    owner: str | None = typer.Option(None, "--owner"),
    create: bool = typer.Option(False, "--create", help="Create the flag if it does not exist."),
) -> None:
    """Change a flag.  Example: polyshift flags set checkout_v2 --on --percent 10 --reason "canary" """
    from polyshift.feature_flags.admin import Change

    if on and off:
        raise UsageError("--on and --off contradict each other; pass one")
    change = Change(enabled=True if on else (False if off else None), percent=percent, allow_add=tuple(allow),
                    deny_add=tuple(deny), allow_remove=tuple(unallow), deny_remove=tuple(undeny),
                    killed=False if unkill else None, description=description, owner=owner)
    if change == Change() and not create:
        raise UsageError("nothing to change: pass --on, --off, --percent, --allow, --deny, ...")
    flag = _admin().change(name, change, reason=reason, create=create)
    if output.json_mode():
        emit_json(flag.to_json())
        return
    say("{name}: {state} (version {version})", name=flag.name, state=_describe(flag.to_json()), version=flag.version)


@flags_app.command("kill")
def flags_kill(name: str, reason: str = typer.Option(..., "--reason")) -> None:
    """Off for everyone, overriding allow lists and percentage.  Example: polyshift flags kill checkout_v2 --reason "errors" """
    flag = _admin().kill(name, reason=reason)
    if output.json_mode():
        emit_json(flag.to_json())
        return
    say("{name}: KILLED (version {version}); clear with 'flags set {name} --unkill --reason ...'", name=flag.name,
        version=flag.version)


@flags_app.command("history")
def flags_history(name: str) -> None:
    """Every change to a flag, from the audit log.  Example: polyshift flags history checkout_v2"""
    entries = _admin().history(name)
    if output.json_mode():
        emit_json(entries)
        return
    table(f"history of {name}", ["#", "at", "actor", "action", "reason", "changes"],
          [[e["seq"], e["at"][:19], e["actor"], e["action"], e["detail"].get("reason", ""),
            ", ".join(f"{k}: {v['from']} → {v['to']}" for k, v in e["detail"].get("changes", {}).items())] for e in entries])


@flags_app.command("check")
def flags_check(name: str, subject: str | None = typer.Option(None, "--subject", help="The subject key to evaluate for.")) -> None:
    """Evaluate a flag as an application would.  Example: polyshift flags check checkout_v2 --subject user-42"""
    from polyshift.feature_flags.client import FlagClient

    validate_name(name)
    client = FlagClient.from_config(output.opts["config"], background=False)
    try:
        if client.stale and not client.flags():
            raise StoreError(client.last_error or "the flag store is unreachable")
        evaluation = client.evaluate(name, subject)
    finally:
        client.close()
    if evaluation is None:
        raise UsageError(f"flag {name!r} does not exist")
    result = {"flag": name, "subject": subject, "value": evaluation.value, "reason": evaluation.reason.value,
              "variant": evaluation.variant, "detail": evaluation.detail}
    if output.json_mode():
        emit_json(result)
        return
    say("{name} for {subject}: {value} ({reason}: {detail})", name=name, subject=subject or "(no subject)",
        value="ON" if evaluation.value else "off", reason=evaluation.reason.value, detail=evaluation.detail)
