"""The lock-hazard analysis against the measured corpus (tests/data/lock_hazards.toml).

Every case runs through the analysis with the catalog of a real PostgreSQL 18 database set up
exactly as the corpus measured it. A hazard the server measurably has must be found (with the
lock level the server took), a safe statement must raise nothing, and the few known
disagreements are listed here with the reason, so a change in either direction is seen.
"""

from __future__ import annotations

import psycopg
import pytest

from bench.lock_corpus_measure import Measurer, _statements, load_corpus
from polyshift.adapters.postgres.catalog import CatalogFacts
from polyshift.adapters.postgres.hazards import Kind, Lock, read_script
from tests.conftest import Server

CORPUS = load_corpus()
RECORDED = CORPUS.recorded

# Disagreements the analysis knowingly keeps, by case id: (what it reports, why).
KNOWN = {
    "drop-table-empty": ("data-loss", "a table's emptiness in the catalog can be stale: dropping a table is always rated data loss"),
    "drop-column-all-nulls": ("data-loss", "whether a column holds only NULLs is data, not catalog: dropping one is data loss"),
    "drop-column-virtual-generated": ("data-loss", "the analysis does not look up whether the dropped column is virtual"),
    "update-backfill-nulls": ("data-loss", "which rows an UPDATE changes is data, not catalog: every UPDATE is a data change, backed up"),
}


@pytest.fixture(scope="module")
def measurer(pg_server: Server) -> Measurer:
    with psycopg.connect(pg_server.admin_url) as conn:
        if conn.info.server_version < 180000:
            pytest.skip("the corpus was measured on PostgreSQL 18")
    return Measurer(pg_server.admin_url, CORPUS.fixtures)


def _verdicts(measurer: Measurer) -> dict[str, tuple[set[Kind], dict[str, Lock]]]:
    out: dict[str, tuple[set[Kind], dict[str, Lock]]] = {}
    for case in CORPUS.cases:
        with measurer._database(case) as url, psycopg.connect(url, autocommit=True) as conn:
            for stmt in _statements(case.session):
                conn.execute(stmt)
            report = read_script(case.sql, CatalogFacts(conn))
            locks: dict[str, Lock] = {}
            for st in report.statements:
                for table, lock in st.locks.items():
                    locks[table] = max(locks.get(table, Lock.ACCESS_SHARE), lock)
            out[case.id] = ({f.kind for f in report.findings}, locks)
    return out


@pytest.fixture(scope="module")
def verdicts(measurer: Measurer) -> dict[str, tuple[set[Kind], dict[str, Lock]]]:
    return _verdicts(measurer)


CASE_IDS = [c.id for c in CORPUS.cases]


@pytest.mark.parametrize("case_id", CASE_IDS)
def test_the_analysis_agrees_with_what_the_server_measured(case_id: str, verdicts: dict[str, tuple[set[Kind], dict[str, Lock]]]) -> None:
    recorded = RECORDED[case_id]
    expected = str(recorded["kind"])
    kinds, _ = verdicts[case_id]
    found = {k.value for k in kinds}
    if case_id in KNOWN:
        assert KNOWN[case_id][0] in found, (case_id, found)
        return
    if expected == "none":
        assert not found, f"{case_id}: a safe statement raised {sorted(found)}"
    elif expected == "fails":
        # Whether existing data violates the new rule is data, not catalog: caught is flagged at all.
        assert found, f"{case_id}: fails on the server, the analysis found nothing"
    else:
        assert expected in found, f"{case_id}: measured {expected}, the analysis found {sorted(found) or 'nothing'}"


# Locks that stop writes or ALTERs are named exactly; ACCESS SHARE (a view, an index attach) need not be.
@pytest.mark.parametrize("case_id", [c.id for c in CORPUS.cases if RECORDED[c.id].get("method") == "held" and c.table
                                     and RECORDED[c.id].get("lock") not in (None, "", "ACCESS SHARE")])
def test_the_lock_level_named_is_the_one_the_server_took(case_id: str, verdicts: dict[str, tuple[set[Kind], dict[str, Lock]]]) -> None:
    case = next(c for c in CORPUS.cases if c.id == case_id)
    measured = str(RECORDED[case_id]["lock"])
    _, locks = verdicts[case_id]
    table = next((t for t in locks if t.split(".")[-1].strip('"') == case.table.split(".")[-1]), None)
    assert table is not None, f"{case_id}: no lock named on {case.table} (named: {sorted(locks)})"
    assert locks[table].label == measured, f"{case_id}: named {locks[table].label}, the server took {measured}"
