"""Graph property values as JSON and back, exactly: what a backup stores and a fingerprint digests.

Plain values (null, booleans, integers, floats, strings, lists of them) are JSON as they are.
Neo4j's typed values become one-key-tagged objects, which no real property can be, because a
Neo4j property is never a map (a FalkorDB map value is tagged too, so the tag stays unambiguous):

    Date             {"$": "date", "v": "2024-02-29"}
    LocalTime        {"$": "localtime", "ns": 45296000000123}                  nanoseconds of the day
    Time             {"$": "time", "ns": ..., "offset": 3600}                  offset in seconds
    LocalDateTime    {"$": "localdatetime", "v": "2024-02-29T12:34:56.000000123"}
    DateTime         {"$": "datetime", "v": local wall time, "offset": s[, "zone": "Europe/Paris"]}
    Duration         {"$": "duration", "months": m, "days": d, "seconds": s, "nanoseconds": n}
    Point            {"$": "point", "srid": 4326, "xyz": [x, y(, z)]}
    byte array       {"$": "bytes", "b64": "..."}

Decoding gives the neo4j driver's own types back, so a restore sends exactly what was read:
nanoseconds, the zone's name and the offset in force at that instant (which settles DST folds).
"""

from __future__ import annotations

import base64
from datetime import timedelta, timezone
from typing import Any

from polyshift.framework.core.errors import BackupError

_TAG = "$"


def encode(value: Any) -> Any:
    """A property value as JSON-ready data; raises BackupError for a type nothing here can restore."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    # A driver Point is a tuple subclass: only plain lists and tuples are lists.
    if type(value) in (list, tuple):
        return [encode(v) for v in value]
    if isinstance(value, dict):
        return {_TAG: "map", "v": {str(k): encode(v) for k, v in value.items()}}
    if isinstance(value, (bytes, bytearray)):
        return {_TAG: "bytes", "b64": base64.b64encode(bytes(value)).decode("ascii")}
    return _encode_typed(value)


def _encode_typed(value: Any) -> Any:
    from neo4j import spatial
    from neo4j import time as ntime

    if isinstance(value, ntime.DateTime):
        if value.tzinfo is None:
            return {_TAG: "localdatetime", "v": value.iso_format()}
        offset = value.utcoffset()
        out = {_TAG: "datetime", "v": value.replace(tzinfo=None).iso_format(),
               "offset": int(offset.total_seconds()) if offset is not None else 0}
        zone = getattr(value.tzinfo, "zone", None) or getattr(value.tzinfo, "key", None)
        if isinstance(zone, str):
            out["zone"] = zone
        return out
    if isinstance(value, ntime.Date):
        return {_TAG: "date", "v": value.iso_format()}
    if isinstance(value, ntime.Time):
        if value.tzinfo is None:
            return {_TAG: "localtime", "ns": value.ticks}
        offset = value.utcoffset()
        return {_TAG: "time", "ns": value.ticks, "offset": int(offset.total_seconds()) if offset is not None else 0}
    if isinstance(value, ntime.Duration):
        return {_TAG: "duration", "months": value.months, "days": value.days, "seconds": value.seconds,
                "nanoseconds": value.nanoseconds}
    if isinstance(value, spatial.Point):
        return {_TAG: "point", "srid": value.srid, "xyz": [float(c) for c in value]}
    raise BackupError(f"property value of type {type(value).__name__} cannot be backed up: {value!r}")


def decode(value: Any) -> Any:
    """The inverse of ``encode``: driver types for tagged objects, plain values as they are."""
    if isinstance(value, list):
        return [decode(v) for v in value]
    if not isinstance(value, dict):
        return value
    kind = value.get(_TAG)
    if kind == "map":
        return {k: decode(v) for k, v in value["v"].items()}
    if kind == "bytes":
        return base64.b64decode(value["b64"])
    return _decode_typed(kind, value)


def _decode_typed(kind: Any, value: dict[str, Any]) -> Any:
    from neo4j import spatial
    from neo4j import time as ntime

    if kind == "date":
        return ntime.Date.from_iso_format(value["v"])
    if kind == "localdatetime":
        return ntime.DateTime.from_iso_format(value["v"])
    if kind == "datetime":
        fixed = ntime.DateTime.from_iso_format(value["v"]).replace(tzinfo=timezone(timedelta(seconds=value["offset"])))
        if "zone" not in value:
            return fixed
        import pytz

        return fixed.astimezone(pytz.timezone(value["zone"]))
    if kind in ("localtime", "time"):
        t = ntime.Time.from_ticks(value["ns"])
        if kind == "localtime":
            return t
        import pytz

        # The driver's Time takes the pytz offsets it hydrates with (whole minutes, as Neo4j's are in practice).
        return pytz.FixedOffset(value["offset"] // 60).localize(t)
    if kind == "duration":
        return ntime.Duration(months=value["months"], days=value["days"], seconds=value["seconds"],
                              nanoseconds=value["nanoseconds"])
    if kind == "point":
        cls = _POINT_CLASSES.get(value["srid"])
        if cls is None:
            raise BackupError(f"point with unknown SRID {value['srid']} in the backup")
        return getattr(spatial, cls)(value["xyz"])
    raise BackupError(f"unknown tagged value {kind!r} in the backup")


# The driver's point classes by SRID (2D and 3D).
_POINT_CLASSES = {7203: "CartesianPoint", 9157: "CartesianPoint", 4326: "WGS84Point", 4979: "WGS84Point"}


def decode_props(props: dict[str, Any]) -> dict[str, Any]:
    return {k: decode(v) for k, v in props.items()}
