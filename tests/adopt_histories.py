"""Other tools' history tables as each tool creates them in PostgreSQL (columns, types and the
rows it writes), for databases that tool brought to a version. Only where the real tool cannot
run here (Flyway, Sqitch and Liquibase need a JVM or Perl distribution this suite does not
install) is the table written by these helpers; dbmate's is written by the real dbmate
(tests/test_adopt_dbmate_tool.py) as well as by ``DBMATE_DDL`` here."""

from __future__ import annotations

import hashlib
from pathlib import Path

from polyshift.framework.adopt.flyway import flyway_checksum
from tests.conftest import Workspace

FLYWAY_DDL = """
CREATE TABLE "public"."flyway_schema_history" (
    "installed_rank" INT NOT NULL,
    "version" VARCHAR(50),
    "description" VARCHAR(200) NOT NULL,
    "type" VARCHAR(20) NOT NULL,
    "script" VARCHAR(1000) NOT NULL,
    "checksum" INTEGER,
    "installed_by" VARCHAR(100) NOT NULL,
    "installed_on" TIMESTAMP NOT NULL DEFAULT now(),
    "execution_time" INTEGER NOT NULL,
    "success" BOOLEAN NOT NULL
);
ALTER TABLE "public"."flyway_schema_history" ADD CONSTRAINT "flyway_schema_history_pk" PRIMARY KEY ("installed_rank");
CREATE INDEX "flyway_schema_history_s_idx" ON "public"."flyway_schema_history" ("success");
"""

DBMATE_DDL = "CREATE TABLE IF NOT EXISTS public.schema_migrations (version character varying(128) NOT NULL PRIMARY KEY)"

SQITCH_DDL = """
CREATE SCHEMA sqitch;
CREATE TABLE sqitch.releases (version REAL PRIMARY KEY, installed_at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
    installer_name TEXT NOT NULL, installer_email TEXT NOT NULL);
CREATE TABLE sqitch.projects (project TEXT PRIMARY KEY, uri TEXT NULL UNIQUE,
    created_at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(), creator_name TEXT NOT NULL, creator_email TEXT NOT NULL);
CREATE TABLE sqitch.changes (change_id TEXT PRIMARY KEY, script_hash TEXT NULL, change TEXT NOT NULL,
    project TEXT NOT NULL REFERENCES sqitch.projects(project) ON UPDATE CASCADE, note TEXT NOT NULL DEFAULT '',
    committed_at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(), committer_name TEXT NOT NULL, committer_email TEXT NOT NULL,
    planned_at TIMESTAMPTZ NOT NULL, planner_name TEXT NOT NULL, planner_email TEXT NOT NULL, UNIQUE(project, script_hash));
"""

LIQUIBASE_DDL = """
CREATE TABLE public.databasechangeloglock (ID INTEGER NOT NULL, LOCKED BOOLEAN NOT NULL, LOCKGRANTED TIMESTAMP WITHOUT TIME ZONE,
    LOCKEDBY VARCHAR(255), CONSTRAINT DATABASECHANGELOGLOCK_PKEY PRIMARY KEY (ID));
INSERT INTO public.databasechangeloglock (ID, LOCKED) VALUES (1, FALSE);
CREATE TABLE public.databasechangelog (ID VARCHAR(255) NOT NULL, AUTHOR VARCHAR(255) NOT NULL, FILENAME VARCHAR(255) NOT NULL,
    DATEEXECUTED TIMESTAMP WITHOUT TIME ZONE NOT NULL, ORDEREXECUTED INTEGER NOT NULL, EXECTYPE VARCHAR(10) NOT NULL,
    MD5SUM VARCHAR(35), DESCRIPTION VARCHAR(255), COMMENTS VARCHAR(255), TAG VARCHAR(255), LIQUIBASE VARCHAR(20),
    CONTEXTS VARCHAR(255), LABELS VARCHAR(255), DEPLOYMENT_ID VARCHAR(10));
"""


def run_scripts(ws: Workspace, *paths: Path) -> None:
    """What the other tool did to the schema: its scripts, run as written."""
    for path in paths:
        ws.sql(path.read_text())


def flyway_history(ws: Workspace, root: Path, scripts: list[str], *, failed: str | None = None) -> None:
    ws.sql(FLYWAY_DDL)
    for rank, script in enumerate(scripts, 1):
        name = Path(script).name
        version, _, description = name[1:].removesuffix(".sql").partition("__")
        ws.sql("INSERT INTO flyway_schema_history (installed_rank, version, description, type, script, checksum, installed_by, "
               "execution_time, success) VALUES (%s, %s, %s, 'SQL', %s, %s, 'flyway', 12, %s)",
               (rank, version.replace("_", "."), description.replace("_", " "), script,
                flyway_checksum((root / script).read_bytes()), script != failed))


def sqitch_history(ws: Workspace, root: Path, project: str, changes: list[str]) -> None:
    ws.sql(SQITCH_DDL)
    ws.sql("INSERT INTO sqitch.projects (project, creator_name, creator_email) VALUES (%s, 'Ada', 'ada@example.org')", (project,))
    for number, change in enumerate(changes):
        script = (root / "deploy" / f"{change}.sql").read_bytes()
        ws.sql("INSERT INTO sqitch.changes (change_id, script_hash, change, project, committed_at, committer_name, committer_email, "
               "planned_at, planner_name, planner_email) VALUES (%s, %s, %s, %s, now() + %s * interval '1 second', 'Ada', "
               "'ada@example.org', now(), 'Ada', 'ada@example.org')",
               (hashlib.sha1(f"{project}:{change}".encode()).hexdigest(), hashlib.sha1(script).hexdigest(),
                change.split("@")[0], project, number))
