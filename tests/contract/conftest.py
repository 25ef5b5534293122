"""The contract suite runs every test once per store server: PostgreSQL, pgvector, Redis,
FalkorDB, and Neo4j on both release lines the fixtures start."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.contract.stores import SERVERS, ContractStore, open_store


@pytest.fixture(params=list(SERVERS))
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ContractStore]:
    opened = open_store(request, tmp_path, request.param)
    yield opened
    opened.close()
