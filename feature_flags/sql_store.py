"""Flags in the control-plane database: a table of flags and one version row, both part of the
control plane's versioned schema (``polyshift.framework.control.schema``), read and written on the
database's own driver like the rest of the control plane (``polyshift.framework.control.database``)."""

from __future__ import annotations

import json

from polyshift.feature_flags.model import Flag
from polyshift.feature_flags.stores import ConflictError
from polyshift.framework.control.database import DuplicateKey, StateDatabase
from polyshift.framework.control.keys import FLAGS, FLAGS_VERSION
from polyshift.framework.control.state import open_database
from polyshift.framework.core.errors import StoreError
from polyshift.framework.core.secrets import url_without_password


class SqlFlagStore:
    def __init__(self, url: str, db: StateDatabase | None = None) -> None:
        self.description = f"state database {url_without_password(url)}"
        self.db = db or open_database(url)  # creates or upgrades the tables, serialized with other runners

    def _fail(self, exc: StoreError) -> StoreError:
        return StoreError(f"flags: {self.description} is unreachable: {exc}")

    def version(self) -> int:
        try:
            found = self.db.rows(f"SELECT version FROM {FLAGS_VERSION} WHERE id = 1")
        except StoreError as exc:
            raise self._fail(exc) from None
        return int(found[0]["version"] or 0) if found else 0

    def load(self) -> tuple[int, dict[str, Flag]]:
        try:
            # One transaction, so the version and the flags are of the same moment.
            with self.db.transaction() as tx:
                found = tx.rows(f"SELECT version FROM {FLAGS_VERSION} WHERE id = 1")
                rows = tx.rows(f"SELECT data FROM {FLAGS}")
        except StoreError as exc:
            raise self._fail(exc) from None
        version = int(found[0]["version"] or 0) if found else 0
        flags = [Flag.from_json(json.loads(r["data"])) for r in rows]
        return version, {f.name: f for f in flags}

    def get(self, name: str) -> Flag | None:
        try:
            found = self.db.rows(f"SELECT data FROM {FLAGS} WHERE name = %(name)s", {"name": name})
        except StoreError as exc:
            raise self._fail(exc) from None
        return Flag.from_json(json.loads(found[0]["data"])) if found else None

    def save(self, flag: Flag, *, expected_version: int | None) -> None:
        data = json.dumps(flag.to_json(), sort_keys=True)
        try:
            with self.db.transaction() as tx:
                if expected_version is None:
                    tx.execute(f"INSERT INTO {FLAGS} (name, version, data) VALUES (%(name)s, %(version)s, %(data)s)",
                               {"name": flag.name, "version": flag.version, "data": data})
                elif tx.execute(f"UPDATE {FLAGS} SET version = %(version)s, data = %(data)s "
                                "WHERE name = %(name)s AND version = %(expected)s",
                                {"version": flag.version, "data": data, "name": flag.name, "expected": expected_version}) != 1:
                    raise ConflictError(flag.name)
                if tx.execute(f"UPDATE {FLAGS_VERSION} SET version = version + 1 WHERE id = 1") == 0:
                    tx.execute(f"INSERT INTO {FLAGS_VERSION} (id, version) VALUES (1, 1)")
        except DuplicateKey:
            raise ConflictError(flag.name) from None
        except StoreError as exc:
            raise self._fail(exc) from None

    def close(self) -> None:
        self.db.close()
