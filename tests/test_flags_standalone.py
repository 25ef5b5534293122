"""An application reads flags with the [flags] settings alone: no migrator secrets, no engine."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.conftest import FlagProject

APP_CONFIG = """\
[project]
state_url = "postgresql://migrator:${{STATE_PASSWORD}}@db.internal/state"
[stores.main]
kind = "postgres"
url = "postgresql://migrator:${{MIGRATOR_PASSWORD}}@db.internal/app"
[flags]
store = "redis"
url = "{url}"
prefix = "{prefix}"
refresh_interval = "0.2s"
"""


@pytest.fixture
def redis_flags(tmp_path: Path, redis_url: str) -> FlagProject:
    from polyshift.feature_flags.admin import Change

    project = FlagProject(tmp_path, "redis", redis_url)
    project.admin().change("checkout_v2", Change(enabled=True, percent=100), reason="launch", create=True)
    return project


def test_an_application_reads_flags_with_a_config_whose_store_secrets_it_does_not_have(
        redis_flags: FlagProject, redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MIGRATOR_PASSWORD", raising=False)
    monkeypatch.delenv("STATE_PASSWORD", raising=False)
    app = tmp_path / "app.toml"
    app.write_text(APP_CONFIG.format(url=redis_url, prefix=redis_flags.prefix))
    from polyshift import FlagClient

    with FlagClient.from_config(app, background=False) as client:
        assert client.is_enabled("checkout_v2", subject="user-1") is True
        assert not client.stale


def test_an_application_reads_flags_from_the_store_url_alone(redis_flags: FlagProject, redis_url: str) -> None:
    from polyshift import FlagClient

    with FlagClient.from_url(redis_url, prefix=redis_flags.prefix, background=False) as client:
        assert client.is_enabled("checkout_v2", subject="user-1") is True


def test_a_flags_table_that_needs_a_missing_variable_names_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FLAGS_REDIS", raising=False)
    app = tmp_path / "app.toml"
    app.write_text('[flags]\nstore = "redis"\nurl = "${FLAGS_REDIS}"\n')
    from polyshift import FlagClient
    from polyshift.framework.core.errors import ConfigError

    with pytest.raises(ConfigError, match="FLAGS_REDIS"):
        FlagClient.from_config(app)


def test_importing_the_flag_client_imports_neither_the_engine_nor_a_store_driver() -> None:
    probe = textwrap.dedent("""\
        import sys
        from polyshift import FlagClient
        from polyshift.feature_flags.openfeature_provider import PolyshiftProvider
        heavy = ("sqlalchemy", "psycopg", "redis", "neo4j", "falkordb", "pglast", "typer",
                 "polyshift.framework.engine", "polyshift.framework.control", "polyshift.adapters")
        print(sorted({m.split(".")[0] if not m.startswith("polyshift") else ".".join(m.split(".")[:3])
                      for m in sys.modules if m.startswith(heavy)}))
        """)
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env={**os.environ}, check=True)
    assert out.stdout.strip() == "[]", out.stdout
