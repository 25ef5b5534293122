"""What pip installs: one top-level name, polyshift, with everything the commands need inside it.

The wheel is built from the repository and installed into a directory of its own, outside the
source tree, so nothing can be found by accident in the repository's folders.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(out), str(REPO)],
                   check=True, capture_output=True, text=True)
    [built] = out.glob("polyshift-*.whl")
    yield built


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("site")
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--quiet", "--target", str(target), str(wheel)],
                   check=True, capture_output=True, text=True)
    return target


def test_the_wheel_installs_one_top_level_name(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    assert {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")} == {"polyshift"}


def test_the_wheel_holds_every_module_of_the_source_tree(wheel: Path) -> None:
    # The packages are listed by hand in pyproject.toml (the folders map onto one name): a new
    # subpackage missing from the list would be missing from every installation.
    names = set(zipfile.ZipFile(wheel).namelist())
    roots = {"framework": "polyshift/framework", "adapters": "polyshift/adapters", "feature_flags": "polyshift/feature_flags"}
    expected = {f"{dest}/{path.relative_to(REPO / src).as_posix()}" for src, dest in roots.items()
                for path in (REPO / src).rglob("*.py") if "public" not in path.parts and "__pycache__" not in path.parts}
    assert sorted(expected - names) == []


def test_the_wheel_ships_the_sample_migrations_and_the_neo4j_launcher(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    samples = {p.relative_to(REPO / "migrations").as_posix() for p in (REPO / "migrations").rglob("*")
               if p.is_file() and "__pycache__" not in p.parts}
    assert sorted(f"polyshift/samples/{s}" for s in samples if f"polyshift/samples/{s}" not in names) == []
    assert "polyshift/framework/sandbox/neo4j_launcher/pom.xml" in names


def test_polyshift_demo_runs_from_the_installed_wheel(installed: Path, tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(installed)}
    where = subprocess.run([sys.executable, "-c", "import polyshift; print(polyshift.__file__)"], cwd=tmp_path, env=env,
                           capture_output=True, text=True, check=True)
    assert where.stdout.startswith(str(installed)), where.stdout
    demo = subprocess.run([sys.executable, "-m", "polyshift.framework.cli.main", "demo"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-3000:]
    assert "release 0003" in demo.stdout and "rolled back" in demo.stdout
