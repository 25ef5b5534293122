"""A real public history adopted: Ory Kratos's PostgreSQL migrations, as published in the Go module
github.com/ory/kratos@v1.3.1, directory persistence/sql/migrations/sql
(https://github.com/ory/kratos/tree/v1.3.1/persistence/sql/migrations/sql), fetched and checksum-
verified through the Go module proxy by polyshift.framework.sandbox.histories (nothing of it is
kept in this repository). Its layout is gobuffalo/pop's, as Ory's popx runs it.

What the history is, measured here: 315 PostgreSQL migrations (273 ``.postgres.`` files and 42
dialect-less ones), 21 empty ups and 111 empty downs (placeholders for what only another
database needed), and 106 empty downs under ups that change something.

What its downs do, found by running them: they are not each migration's inverse.
- A group of versions made from one change is undone by one version's down, and some downs
  touch tables that only an earlier step of the same rollback brings back (the down of
  20200830130642000004 drops selfservice_verification_flow_methods, which 20210311102338000020
  dropped going up and the down of 20210311102338000002 recreates). polyshift plans a whole
  rollback against the schema as it is when the command starts, so it refuses ``rollback --to 0``
  there, before changing anything: it cannot back up a table that does not exist yet.
- Some ups destroy or add with an empty down (20220824165300000002 adds a CHECK constraint, its
  down is empty): rolling back past them leaves their change, and ``up`` again fails on it, in
  pop exactly as here. So the round trip holds above 20220825134336000000, and not below.

The tests share one database, brought up once (the 315 steps, each behind its verified backup,
are most of this file's run time); they run in file order, the last one leaving it part-way.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from polyshift.framework.sandbox import histories
from tests.conftest import Server, Workspace, _fresh_database

KRATOS = histories.KRATOS
# Above it every down undoes its up (or both are empty): the newest 37 migrations.
ROUND_TRIP_FROM = "20220825134336000000"
ADDS_A_CONSTRAINT_WITH_AN_EMPTY_DOWN = "20220824165300000002"


def kratos_migrations() -> Path:
    if shutil.which("go") is None and not Path("/usr/local/go/bin/go").is_file():
        pytest.skip(f"{KRATOS.cite()} is fetched with the Go toolchain ('go mod download'), which is not installed")
    return histories.fetch(KRATOS)


@dataclass
class Adopted:
    ws: Workspace
    plan: dict[str, Any]
    empty_schema: str
    full_schema: str


@pytest.fixture(scope="module")
def kratos(pg_server: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Adopted]:
    source = kratos_migrations()
    for url in _fresh_database(pg_server):
        ws = Workspace(tmp_path_factory.mktemp("kratos"), url)
        empty = ws.fingerprint().schema_hash
        result = ws.run("--json", "import", "--from", "pop", str(source), "--store", "main", "--dialect", "postgres")
        assert result.exit_code == 0, result.output
        up = ws.run("up")
        assert up.exit_code == 0, up.output[-3000:]
        yield Adopted(ws, json.loads(result.stdout), empty, ws.fingerprint().schema_hash)


def test_the_postgres_history_is_imported_whole_with_its_placeholders_as_noops(kratos: Adopted) -> None:
    migrations = kratos.plan["migrations"]
    assert len(migrations) == 315
    assert sum(".postgres." in m["source"] for m in migrations) == 273
    assert kratos.plan["problems"] == [] and kratos.plan["excluded"] == []
    folder = kratos.ws.migrations / "main"
    assert sum("-- polyshift: noop" in p.read_text() for p in folder.glob("*.forward.sql")) == 21
    assert sum("-- polyshift: noop" in p.read_text() for p in folder.glob("*.rollback.sql")) == 111
    assert sum(len(m["warnings"]) for m in migrations) == 106
    first = (folder / "20150100000001000000_networks.forward.sql").read_text()
    assert first.startswith("-- imported-from: pop\n-- source: 20150100000001000000_networks.postgres.up.sql\n"
                            "-- source-id: 20150100000001000000\n")
    assert (KRATOS.module, KRATOS.version) == ("github.com/ory/kratos", "v1.3.1")


def test_up_applies_every_migration_and_status_shows_nothing_pending(kratos: Adopted) -> None:
    ledger = kratos.ws.ledger()
    assert len(ledger) == 315 and ledger[-1] == ("20240425095000000001", "up")
    status = json.loads(kratos.ws.run("--json", "status").stdout)[0]
    assert status["current"] == "20240425095000000001" and status["pending"] == [] and status["drift"] == []
    assert kratos.ws.value("SELECT to_regclass('identities')::text") == "identities"


def test_rollback_to_nothing_is_refused_before_anything_changes(kratos: Adopted) -> None:
    result = kratos.ws.run("--json", "rollback", "--to", "0")
    assert result.exit_code == 2, result.output
    error = json.loads(result.stdout)["error"]
    assert error.startswith("main/20200830130642000004_add_verification_methods: its rollback step is destructive (risk C) "
                            "but no backup scope could be inferred")
    assert kratos.ws.value("SELECT to_regclass('selfservice_verification_flow_methods')") is None
    assert kratos.ws.fingerprint().schema_hash == kratos.full_schema and len(kratos.ws.ledger()) == 315


def test_the_newest_migrations_roll_back_and_go_up_again_to_the_same_schema(kratos: Adopted) -> None:
    down = kratos.ws.run("rollback", "--to", ROUND_TRIP_FROM)
    assert down.exit_code == 0, down.output[-3000:]
    assert kratos.ws.value("SELECT to_regclass('session_devices')") is None  # 20220907132836000000's table
    assert kratos.ws.fingerprint().schema_hash != kratos.full_schema
    up = kratos.ws.run("up")
    assert up.exit_code == 0, up.output[-3000:]
    assert kratos.ws.fingerprint().schema_hash == kratos.full_schema


def test_an_empty_down_leaves_its_ups_change_and_up_again_fails_on_it(kratos: Adopted) -> None:
    below = "20220824165300000001"
    down = kratos.ws.run("rollback", "--to", below)
    assert down.exit_code == 0, down.output[-3000:]
    assert kratos.ws.value("SELECT count(*) FROM pg_constraint WHERE conname = 'identity_recovery_tokens_token_type_ck'") == 1
    up = kratos.ws.run("up")
    assert up.exit_code == 3, up.output[-3000:]
    assert f"{ADDS_A_CONSTRAINT_WITH_AN_EMPTY_DOWN}_add_flow_type_check_constraint forward failed" in up.output
    assert "SQLSTATE 42710" in up.output  # duplicate_object: the constraint the empty down left
    status = json.loads(kratos.ws.run("--json", "status").stdout)[0]
    assert status["current"] == below and status["pending"][0] == ADDS_A_CONSTRAINT_WITH_AN_EMPTY_DOWN
