"""The console's view of releases: each release's state per store (the same listing as
``polyshift releases``), and one release's timeline from the run journal with a chart of its
flag's percentage over time (from the audit log, so edits made by hand show too) and the gate
outcome of every stage, drawn as SVG on the server.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from markupsafe import escape
from sqlalchemy.exc import SQLAlchemyError

from polyshift.feature_flags.server.service import Service, public_error
from polyshift.framework.core.errors import PolyshiftError
from polyshift.framework.core.lifecycle import Phase, Step

log = logging.getLogger("polyshift.serve")


@dataclass
class ReleaseView:
    row: dict[str, Any] | None = None
    problem: str | None = None
    timeline: list[dict[str, Any]] = field(default_factory=list)
    chart: str = ""
    live: bool = False


def listing(service: Service) -> tuple[list[dict[str, Any]], str | None]:
    """Every release with its state per store, or the reason it cannot be read now."""
    from polyshift.framework.engine.listing import release_listing
    from polyshift.framework.engine.project import open_project
    from polyshift.framework.engine.session import Session

    try:
        project = open_project(service.config_path)
        try:
            with Session(project) as session:
                return release_listing(session), None
        finally:
            project.close()
    except PolyshiftError as exc:
        return [], f"releases cannot be read now: {public_error(exc)}"


def _summary(entry: dict[str, Any]) -> str:
    d = entry["detail"]
    if entry["step"] == Step.STAGE:
        gates = d.get("gates") or []
        parts = [f"{d.get('percent', 0):g}%"] + [f"{g['gate']} {'ok' if g['ok'] else 'FAILED'}: {g['detail']}" for g in gates]
        if d.get("cause"):
            parts.append(str(d["cause"]))
        return "; ".join(parts)
    for key in ("cause", "reason", "error", "backup", "flag"):
        if d.get(key):
            return f"{key}: {d[key]}"
    return ""


def detail(service: Service, version: str) -> ReleaseView:
    rows, problem = listing(service)
    view = ReleaseView(row=next((r for r in rows if r["version"] == version), None), problem=problem)
    if view.row is None and problem is None:
        view.problem = f"no release {version} in this project"
    try:
        journal = service.state.journal_entries(version=version)
    except SQLAlchemyError:  # the state database's driver error; the page still shows the rest
        log.warning("the run journal cannot be read", exc_info=True)
        view.problem = "the run journal cannot be read now (the server log has the details)"
        journal = []
    view.timeline = [{"at": e["at"].isoformat(timespec="seconds") if hasattr(e["at"], "isoformat") else str(e["at"]),
                      "step": e["step"], "phase": e["phase"], "store": e["store"], "summary": _summary(e)} for e in journal]
    view.live = bool(view.row and str(view.row["last"]).startswith("in progress"))
    flag = view.row["flag"] if view.row else None
    series: list[tuple[datetime, float]] = []
    if flag:
        try:
            series = percent_series(service, flag)
        except PolyshiftError:
            series = []
    gates = [(e["at"], float(e["detail"].get("percent", 0)), e["phase"] == Phase.DONE) for e in journal
             if e["step"] == Step.STAGE and e["phase"] in (Phase.DONE, Phase.FAILED)]
    view.chart = chart(series, gates)
    return view


def percent_series(service: Service, flag: str) -> list[tuple[datetime, float]]:
    """The share of subjects the flag was on for after each change: 0 while off or killed."""
    points: list[tuple[datetime, float]] = []
    enabled, percent, killed = False, 0.0, False
    for e in service.state.audit_entries(subject=f"flag:{flag}"):
        changes = e.detail.get("changes", {})
        enabled = bool(changes["enabled"]["to"]) if "enabled" in changes else enabled
        percent = float(changes["percent"]["to"]) if "percent" in changes else percent
        killed = bool(changes["killed"]["to"]) if "killed" in changes else killed
        points.append((datetime.fromisoformat(e.at), 0.0 if killed or not enabled else percent))
    return points


W, H, LEFT, BOTTOM, TOP, RIGHT = 760, 240, 44, 28, 12, 16


def _aware(at: datetime) -> float:
    return at.timestamp()


def chart(series: list[tuple[datetime, float]], gates: list[tuple[datetime, float, bool]]) -> str:
    """A step chart of the percentage over time, with a dot per stage: green gates passed, red failed."""
    if not series and not gates:
        return '<p class="muted">No flag changes recorded for this release yet.</p>'
    times = [_aware(t) for t, _ in series] + [_aware(t) for t, _, _ in gates]
    t0, t1 = min(times), max(times)
    span = max(t1 - t0, 1.0)

    def x(t: float) -> float:
        return LEFT + (t - t0) / span * (W - LEFT - RIGHT)

    def y(p: float) -> float:
        return TOP + (100 - p) / 100 * (H - TOP - BOTTOM)

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {W} {H}" width="100%" role="img" '
             f'aria-label="rollout percentage over time">']
    for tick in (0, 25, 50, 75, 100):
        parts.append(f'<line x1="{LEFT}" x2="{W - RIGHT}" y1="{y(tick):.1f}" y2="{y(tick):.1f}" stroke="#e3e6ec"/>'
                     f'<text x="{LEFT - 6}" y="{y(tick) + 4:.1f}" font-size="11" text-anchor="end" fill="#6b7385">{tick}%</text>')
    if series:
        path, last = [], None
        for t, p in series:
            px, py = x(_aware(t)), y(p)
            path.append(f"M{px:.1f},{py:.1f}" if last is None else f"H{px:.1f}V{py:.1f}")
            last = p
        path.append(f"H{W - RIGHT}")
        parts.append(f'<path d="{" ".join(path)}" fill="none" stroke="#3451b2" stroke-width="2"/>')
    for t, p, ok in gates:
        colour, label = ("#1f7a3d", "gates passed") if ok else ("#b42318", "gate failed")
        title = escape(f"{p:g}%: {label} at {t.isoformat(timespec='seconds')}")
        cx, cy = x(_aware(t)), y(p)
        parts.append(f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="5" fill="{colour}"><title>{title}</title></circle>'
                     f'<text x="{cx:.1f}" y="{cy - 9:.1f}" font-size="11" text-anchor="middle" fill="{colour}">'
                     f'{escape(f"{p:g}%")} {"✓" if ok else "✗"}</text>')
    start = datetime.fromtimestamp(t0).strftime("%Y-%m-%d %H:%M:%S")
    end = datetime.fromtimestamp(t1).strftime("%H:%M:%S")
    parts.append(f'<text x="{LEFT}" y="{H - 8}" font-size="11" fill="#6b7385">{escape(start)}</text>'
                 f'<text x="{W - RIGHT}" y="{H - 8}" font-size="11" text-anchor="end" fill="#6b7385">{escape(end)}</text></svg>')
    return "".join(parts)
