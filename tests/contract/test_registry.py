"""Contract: every store kind is declared once, built from its record, and covered by this suite."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from polyshift.adapters import adapter_class
from polyshift.framework.core.kinds import known_kinds, store_kind
from tests.contract.stores import SERVERS


def test_every_kind_this_version_knows_runs_the_contract_suite() -> None:
    covered = {harness.kind for harness, _ in SERVERS.values()}
    assert set(known_kinds()) == covered, "a new kind needs a harness in tests/contract/stores.py"


def test_each_adapter_class_serves_the_kind_that_names_it() -> None:
    for name in known_kinds():
        kind = store_kind(name, where="test")
        cls = adapter_class(kind)  # refuses a class that declares another record
        assert getattr(cls, "kind", None) == name
        assert getattr(cls, "spec", None) is kind


def test_reading_a_config_of_every_kind_imports_no_adapter_and_no_store_driver(tmp_path) -> None:  # type: ignore[no-untyped-def]
    tables = "".join(f'[stores.s{i}]\nkind = "{name}"\nurl = "x://127.0.0.1:1/db"\n' for i, name in enumerate(known_kinds()))
    (tmp_path / "polyshift.toml").write_text(tables)
    probe = textwrap.dedent(f"""
        import sys
        from polyshift.framework.core.config import load_config
        config = load_config({str(tmp_path / "polyshift.toml")!r})
        assert [s.spec.name for s in config.stores.values()] == {list(known_kinds())!r}
        drivers = sorted(m for m in sys.modules
                         if m.split(".")[0] in ("psycopg", "redis", "neo4j", "falkordb") or m.startswith("polyshift.adapters"))
        print(",".join(drivers))
    """)
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == ""
