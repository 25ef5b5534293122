"""The write side: product teams (CLI) and the blue-green runner change flags here.

Every change is a compare-and-set on the flag's version, carries a reason, and is appended to
the control plane's hash-chained audit log with the actor, the before/after values and, for
runner changes, the owning release. ``stage`` and ``kill`` are the runner's hooks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from polyshift.feature_flags.model import Flag, validate_name, validate_percent
from polyshift.feature_flags.stores import ConflictError, FlagStore
from polyshift.framework.control.state import ControlPlane, actor
from polyshift.framework.core.errors import PolyshiftError, StoreError, UsageError

_ANY = object()  # no compare-and-set


class FlagChanged(PolyshiftError):
    """The flag is not at the version the caller last saw: someone else changed it."""

    def __init__(self, message: str, *, flag: Flag | None) -> None:
        super().__init__(message)
        self.flag = flag


_EDITABLE = {"description", "owner", "enabled", "percent", "allow", "deny", "killed", "release"}


@dataclass
class Change:
    enabled: bool | None = None
    percent: float | None = None
    allow_add: tuple[str, ...] = ()
    allow_remove: tuple[str, ...] = ()
    deny_add: tuple[str, ...] = ()
    deny_remove: tuple[str, ...] = ()
    killed: bool | None = None
    description: str | None = None
    owner: str | None = None
    release: str | None = None

    def apply(self, flag: Flag) -> dict[str, Any]:
        fields: dict[str, Any] = {}
        for name in ("enabled", "killed", "description", "owner", "release"):
            value = getattr(self, name)
            if value is not None:
                fields[name] = value
        if self.percent is not None:
            fields["percent"] = validate_percent(self.percent)
        if self.allow_add or self.allow_remove:
            fields["allow"] = (flag.allow | frozenset(self.allow_add)) - frozenset(self.allow_remove)
        if self.deny_add or self.deny_remove:
            fields["deny"] = (flag.deny | frozenset(self.deny_add)) - frozenset(self.deny_remove)
        return fields


def _changed_since(name: str, current: Flag | None, expected: object) -> str:
    if current is None:
        return f"flag {name} no longer exists (you saw version {expected}); nothing was changed"
    if expected is None:
        return f"flag {name} was created by {current.updated_by} meanwhile (version {current.version}); nothing was changed"
    state = "killed" if current.killed else "changed"
    return (f"flag {name} was {state} by {current.updated_by} at {current.updated_at} (now version {current.version}, "
            f"you saw version {expected}); nothing was changed: review its current state and apply your change again")


def _diff(before: Flag | None, after: Flag) -> dict[str, Any]:
    old = before.to_json() if before else {}
    new = after.to_json()
    return {k: {"from": old.get(k), "to": new[k]} for k in sorted(_EDITABLE) if old.get(k) != new[k]}


class FlagAdmin:
    def __init__(self, store: FlagStore, state: ControlPlane) -> None:
        self.store = store
        self.state = state

    def get(self, name: str) -> Flag:
        flag = self.store.get(validate_name(name))
        if flag is None:
            raise UsageError(f"flag {name!r} does not exist (create it with 'polyshift flags set {name} --create ...')")
        return flag

    def change(self, name: str, change: Change, *, reason: str, create: bool = False, who: str | None = None,
               expected_version: int | object | None = _ANY, via: str | None = None) -> Flag:
        """Apply ``change`` atomically; raises UsageError for bad input before anything is written.

        With ``expected_version`` (None: the flag must not exist yet) it is a compare-and-set on the
        version the caller saw: a flag changed since (an operator's kill) raises FlagChanged and
        nothing is written. Without it, a concurrent change is re-read and ``change`` re-applied on it.
        ``via`` names the channel (console, api) in the audit entry."""
        validate_name(name)
        if not reason or not reason.strip():
            raise UsageError("every flag change needs --reason")
        if change.percent is not None:
            validate_percent(change.percent)
        who = who or actor()
        if expected_version is not _ANY:
            try:
                return self._apply(name, change, reason=reason, create=create, who=who, expected=expected_version, via=via)
            except ConflictError:
                current = self.store.get(name)
                raise FlagChanged(_changed_since(name, current, expected_version), flag=current) from None
        for _attempt in range(20):
            try:
                return self._apply(name, change, reason=reason, create=create, who=who, expected=_ANY, via=via)
            except ConflictError:
                continue  # someone else changed it between our read and write: re-apply on theirs
        raise StoreError(f"flag {name!r} is being changed concurrently; gave up after 20 attempts")

    def _apply(self, name: str, change: Change, *, reason: str, create: bool, who: str, expected: int | object | None,
               via: str | None = None) -> Flag:
        before = self.store.get(name)
        if expected is not _ANY and (before.version if before else None) != expected:
            raise ConflictError(f"flag {name} is at version {before.version if before else 'none'}, not {expected}")
        if before is None and not create:
            raise UsageError(f"flag {name!r} does not exist; pass --create to create it")
        base = before or Flag(name=name)
        after = base.changed(actor=who, **change.apply(base))
        self.store.save(after, expected_version=before.version if before else None)
        detail = {"reason": reason, "changes": _diff(before, after), "version": after.version, "release": after.release}
        if via:
            detail["via"] = via
        try:
            self.state.audit("flag.created" if before is None else "flag.changed", f"flag:{name}", detail, who=who)
        except StoreError as exc:
            raise StoreError(f"flag {name} was changed to version {after.version}, but the audit entry failed: {exc}") from None
        return after

    # -- runner hooks -----------------------------------------------------------------
    def stage(self, name: str, percent: float, *, release: str, reason: str | None = None,
              expected_version: int | object | None = _ANY) -> Flag:
        """Move a release's flag to ``percent`` (enabling it and clearing any kill switch).

        With ``expected_version`` (None: the flag must not exist yet) it is a compare-and-set:
        a flag someone else changed since (an operator's kill) raises FlagChanged, so a runner
        never silently undoes a human's decision."""
        change = Change(enabled=True, percent=validate_percent(percent), killed=False, release=release)
        why = reason or f"release {release}: stage {percent:g}%"
        if expected_version is _ANY:
            return self.change(name, change, reason=why, create=True)
        try:
            return self._apply(validate_name(name), change, reason=why, create=True, who=actor(), expected=expected_version)
        except ConflictError:
            current = self.store.get(name)
            who = current.updated_by if current else "someone"
            state = "killed" if current is not None and current.killed else "changed"
            raise FlagChanged(f"flag {name} was {state} by {who} since the release last set it", flag=current) from None

    def kill(self, name: str, *, release: str | None = None, reason: str | None = None) -> Flag:
        """Off for everyone, now: the first thing an undo does."""
        change = Change(killed=True, release=release)
        return self.change(name, change, reason=reason or (f"release {release}: kill" if release else "kill"))

    def history(self, name: str) -> list[dict[str, Any]]:
        validate_name(name)
        return [e.__dict__ for e in self.state.audit_entries(subject=f"flag:{name}")]
