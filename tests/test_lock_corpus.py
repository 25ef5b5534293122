"""The lock-hazard corpus (tests/data/lock_hazards.toml) and its ground truth stay true on the real server.

A fixed subset of the cases is measured again on PostgreSQL 18 (bench/lock_corpus_measure.py:
locks read from pg_locks, rewrite from the relation's file node, scans from exact table
statistics, data loss by comparing every stored value) and must match what the file records, so
the corpus cannot rot: every statement the issue names, and for each kind of hazard and each
measuring method a few cases. The whole corpus takes about 75 s on two cores; it is re-measured
by ``python bench/lock_corpus_measure.py --check``.
"""

from __future__ import annotations

import dataclasses

import psycopg
import pytest

from bench.lock_corpus_measure import (
    DERIVED_FIELDS,
    MEASURED_FIELDS,
    Measurer,
    compare,
    derive_kind,
    load_corpus,
    recorded_measurement,
)
from tests.conftest import Server

CORPUS = load_corpus()
CASES = {case.id: case for case in CORPUS.cases}

# Statements issue 13 names, by case id: each must stay in the corpus.
ISSUE_CASES = (
    "add-column-default-random", "add-column-default-plpgsql-function", "add-column-stored-generated",
    "add-column-unique", "vacuum-full", "create-index", "create-unique-index", "add-foreign-key",
    "add-foreign-key-not-valid", "add-check-constraint", "add-check-constraint-not-valid",
    "add-column-serial-primary-key", "reindex-concurrently-false", "cluster-all", "reindex-schema",
    "reindex-database", "drop-schema-with-objects",
)

# Beside the issue's statements: each kind, the safe forms, and each measuring method (held open,
# the lock ladder for statements that must run outside a transaction or fail, a dropped database).
REMEASURED = (
    *ISSUE_CASES,
    "drop-column", "alter-type-numeric-lose-scale", "truncate-cascade", "drop-database", "update-all-rows",
    "add-column-nullable", "add-column-default-now", "add-column-virtual-generated", "validate-foreign-key",
    "validate-check-constraint", "set-not-null-after-validated-check", "add-not-null-constraint-not-valid",
    "create-index-concurrently", "alter-type-timestamptz-utc", "add-unique-using-index", "update-backfill-nulls",
    "drop-schema-empty", "add-column-not-null-no-default", "create-unique-index-duplicates",
    "create-index-concurrently-partitioned", "rename-column", "drop-column-virtual-generated", "set-not-null",
    "add-primary-key-using-index-nullable", "add-column-with-check", "attach-partition", "alter-domain-add-constraint",
)


@pytest.fixture(scope="module")
def measurer(pg_server: Server) -> Measurer:
    with psycopg.connect(pg_server.admin_url) as conn:
        version = conn.info.server_version
    if version < 180000:
        pytest.skip(f"the ground truth was measured on PostgreSQL 18, this server is {version}")
    return Measurer(pg_server.admin_url, CORPUS.fixtures)


def test_corpus_holds_80_to_150_cases_of_every_kind() -> None:
    kinds = [CORPUS.recorded[case.id]["kind"] for case in CORPUS.cases]
    assert 80 <= len(kinds) <= 150
    assert {"lock", "data-loss", "breaking", "fails", "none"} <= set(kinds)


def test_every_case_cites_its_public_source() -> None:
    uncited = [case.id for case in CORPUS.cases
               if "https://" not in case.source and "issue 13" not in case.source]
    assert not uncited
    from_rule_docs = [case.id for case in CORPUS.cases
                      if "squawkhq.com/docs/" in case.source or "atlasgo.io/lint/analyzers" in case.source]
    assert len(from_rule_docs) >= 0.9 * len(CORPUS.cases)


def test_every_statement_the_issue_names_is_in_the_corpus() -> None:
    assert [case_id for case_id in ISSUE_CASES if case_id not in CASES] == []


def test_every_case_records_each_measured_fact_and_a_kind_that_follows_from_them() -> None:
    for case in CORPUS.cases:
        stored = CORPUS.recorded[case.id]
        assert set(stored) == set(MEASURED_FIELDS) | set(DERIVED_FIELDS), case.id
        kind = derive_kind(recorded_measurement(CORPUS, case.id), case.breaking)
        assert (stored["kind"], stored["safe"]) == (kind, kind == "none"), case.id


def test_a_wrong_recorded_fact_is_reported(measurer: Measurer) -> None:
    case = CASES["add-foreign-key"]
    measured = measurer.measure(case)
    wrong = {**CORPUS.recorded[case.id], "lock": "ROW SHARE", "scan": False}
    assert compare(case, wrong, measured) == [
        "lock: recorded 'ROW SHARE', measured 'SHARE ROW EXCLUSIVE'",
        "scan: recorded False, measured True",
    ]


def test_the_remeasured_subset_names_corpus_cases_once() -> None:
    assert [case_id for case_id in REMEASURED if case_id not in CASES] == []
    assert len(set(REMEASURED)) == len(REMEASURED)


@pytest.mark.parametrize("case_id", [case.id for case in CORPUS.cases if case.id in REMEASURED])
def test_recorded_ground_truth_still_holds_on_postgres_18(measurer: Measurer, case_id: str) -> None:
    case = CASES[case_id]
    measured = measurer.measure(case)
    assert compare(case, CORPUS.recorded[case_id], measured) == [], dataclasses.asdict(measured)
