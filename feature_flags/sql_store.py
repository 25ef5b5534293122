"""Flags in the control-plane database (SQLAlchemy Core): a table of flags and one version row,
both part of the control plane's versioned schema (``polyshift.framework.control.schema``)."""

from __future__ import annotations

import json

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from polyshift.feature_flags.model import Flag
from polyshift.feature_flags.stores import ConflictError
from polyshift.framework.control.schema import flags as flags_table
from polyshift.framework.control.schema import flags_version
from polyshift.framework.control.state import make_engine
from polyshift.framework.core.errors import StoreError
from polyshift.framework.core.secrets import redact, url_without_password


class SqlFlagStore:
    def __init__(self, url: str, engine: sa.Engine | None = None) -> None:
        self.description = f"state database {url_without_password(url)}"
        self.engine = engine or make_engine(url)  # creates or upgrades the tables, serialized with other runners

    def _fail(self, exc: Exception) -> StoreError:
        return StoreError(f"flags: {self.description} is unreachable: {redact(str(exc).splitlines()[0])}")

    def version(self) -> int:
        try:
            with self.engine.connect() as conn:
                return int(conn.execute(sa.select(flags_version.c.version).where(flags_version.c.id == 1)).scalar() or 0)
        except SQLAlchemyError as exc:
            raise self._fail(exc) from None

    def load(self) -> tuple[int, dict[str, Flag]]:
        try:
            with self.engine.connect() as conn:
                version = int(conn.execute(sa.select(flags_version.c.version).where(flags_version.c.id == 1)).scalar() or 0)
                rows = conn.execute(sa.select(flags_table.c.data)).scalars().all()
        except SQLAlchemyError as exc:
            raise self._fail(exc) from None
        flags = [Flag.from_json(json.loads(r)) for r in rows]
        return version, {f.name: f for f in flags}

    def get(self, name: str) -> Flag | None:
        try:
            with self.engine.connect() as conn:
                row = conn.execute(sa.select(flags_table.c.data).where(flags_table.c.name == name)).scalar()
        except SQLAlchemyError as exc:
            raise self._fail(exc) from None
        return Flag.from_json(json.loads(row)) if row else None

    def save(self, flag: Flag, *, expected_version: int | None) -> None:
        data = json.dumps(flag.to_json(), sort_keys=True)
        try:
            with self.engine.begin() as conn:
                if expected_version is None:
                    conn.execute(flags_table.insert().values(name=flag.name, version=flag.version, data=data))
                else:
                    done = conn.execute(flags_table.update().where(
                        flags_table.c.name == flag.name, flags_table.c.version == expected_version,
                    ).values(version=flag.version, data=data))
                    if done.rowcount != 1:
                        raise ConflictError(flag.name)
                bumped = conn.execute(flags_version.update().where(flags_version.c.id == 1)
                                      .values(version=flags_version.c.version + 1))
                if bumped.rowcount == 0:
                    conn.execute(flags_version.insert().values(id=1, version=1))
        except IntegrityError:
            raise ConflictError(flag.name) from None
        except SQLAlchemyError as exc:
            raise self._fail(exc) from None

    def close(self) -> None:
        self.engine.dispose()
