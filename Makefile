# Everything installs into .venv from the package registries; nothing is assumed on the machine
# beyond python3 (>= 3.11) with venv. Where a JDK and Maven are present, install also fetches
# Neo4j Community (5.26 LTS, and the newest line on Java 21+) from Maven Central and builds the
# launcher the sandbox and the tests start it with (jars in ~/.m2, launcher in ~/.cache/polyshift).
# Where Go is present, install also builds VersityGW, the S3-compatible server the object-store
# tests start, with go install from the Go module proxy (cached in ~/.cache/polyshift/versitygw).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# The Node OFREP provider the interop test runs, where node and npm are present (the test skips otherwise).
NODE_CHECK := tests/ofrep_node
NODE_STAMP := $(NODE_CHECK)/node_modules/.installed
# The real dbmate CLI (its npm distribution) the adoption tests write a dbmate history with.
ADOPT_NODE := tests/adopt_node
ADOPT_STAMP := $(ADOPT_NODE)/node_modules/.installed

.PHONY: install test demo bench lint typecheck clean

# The installed layout (polyshift.framework -> framework/, ...) as a tree of links, because the
# type checker reads packages from directories and cannot follow setuptools' package-dir mapping.
TYPECHECK := build/typecheck

$(STAMP): pyproject.toml framework/sandbox/neo4j_launcher/pom.xml framework/sandbox/neo4j_launcher/src/main/java/polyshift/neo4j/Launcher.java framework/sandbox/objectstore.py framework/sandbox/histories.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	$(BIN)/python -m polyshift.framework.sandbox.neo4j build
	$(BIN)/python -m polyshift.framework.sandbox.objectstore build
	$(BIN)/python -m polyshift.framework.sandbox.histories fetch
	touch $(STAMP)

$(NODE_STAMP): $(NODE_CHECK)/package.json $(NODE_CHECK)/package-lock.json
	@if command -v npm >/dev/null 2>&1 && command -v node >/dev/null 2>&1; then \
		npm ci --prefix $(NODE_CHECK) --no-audit --no-fund --loglevel=error && touch $@; \
	else echo "node/npm not found: the Node OFREP interop test will be skipped"; fi

$(ADOPT_STAMP): $(ADOPT_NODE)/package.json $(ADOPT_NODE)/package-lock.json
	@if command -v npm >/dev/null 2>&1 && command -v node >/dev/null 2>&1; then \
		npm ci --prefix $(ADOPT_NODE) --no-audit --no-fund --loglevel=error && touch $@; \
	else echo "node/npm not found: the tests that run the real dbmate will be skipped"; fi

# Debian's chromium for the console's browser test, where apt is ours to use (CI runs as root on
# Debian); elsewhere the test says it is skipped and why.
BROWSER_STAMP := $(VENV)/.browser
$(BROWSER_STAMP): $(STAMP)
	@if command -v chromium >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		(timeout 600 apt-get install -y -qq --no-install-recommends chromium >/dev/null 2>&1 || \
		 (timeout 300 apt-get update -qq >/dev/null 2>&1 && timeout 600 apt-get install -y -qq --no-install-recommends chromium >/dev/null 2>&1)) \
		|| echo "chromium could not be installed: the console's browser test will be skipped"; \
	else echo "chromium not installed: the console's browser test will be skipped"; fi
	touch $@

install: $(STAMP) $(NODE_STAMP) $(ADOPT_STAMP) $(BROWSER_STAMP) $(TYPECHECK)/polyshift/__init__.py

lint: install
	$(BIN)/ruff check .

# The installed layout as links, made by install so that a plain `mypy .` (pyproject's mypy_path)
# resolves polyshift's imports too.
$(TYPECHECK)/polyshift/__init__.py:
	rm -rf $(TYPECHECK) && mkdir -p $(TYPECHECK)/polyshift
	ln -s $(CURDIR)/framework/public/__init__.py $(TYPECHECK)/polyshift/__init__.py
	ln -s $(CURDIR)/framework $(TYPECHECK)/polyshift/framework
	ln -s $(CURDIR)/adapters $(TYPECHECK)/polyshift/adapters
	ln -s $(CURDIR)/feature_flags $(TYPECHECK)/polyshift/feature_flags

# The package under its installed names, then the tests, benchmarks and sample migrations.
typecheck: install
	cd $(TYPECHECK) && $(CURDIR)/$(BIN)/mypy --config-file $(CURDIR)/pyproject.toml -p polyshift
	$(BIN)/mypy .

# Every test that has a control plane runs on SQLite and on PostgreSQL (tests/conftest.py).
test: install lint typecheck
	$(BIN)/python -m pytest
	mkdir -p build && $(BIN)/polyshift --config compose/polyshift.toml rehearse --junit build/rehearsal.xml

demo: install
	$(BIN)/polyshift demo

bench: install
	$(BIN)/python bench/pg_backup_restore.py --write bench/RESULTS.md
	$(BIN)/python bench/pg_parallel.py --write bench/PARALLEL_RESULTS.md
	$(BIN)/python bench/pg_backup_restore.py --vectors --write bench/PGVECTOR_RESULTS.md
	$(BIN)/python bench/redis_backup_restore.py --write bench/REDIS_RESULTS.md
	$(BIN)/python bench/graph_backup_restore.py --write bench/GRAPH_RESULTS.md
	$(BIN)/python bench/flags_eval.py --write bench/FLAGS_RESULTS.md
	$(BIN)/python bench/ofrep.py --write bench/OFREP_RESULTS.md
	$(BIN)/python bench/release_noop.py --write bench/RELEASE_RESULTS.md
	$(BIN)/python bench/lock_hazards.py --write bench/LOCK_HAZARDS_RESULTS.md
	$(BIN)/python bench/rehearse.py --write bench/REHEARSE_RESULTS.md
	$(BIN)/python bench/zero_downtime.py --write bench/ZERO_DOWNTIME_RESULTS.md
	$(BIN)/python bench/quick_commands.py --write bench/QUICK_COMMANDS_RESULTS.md
	$(BIN)/python bench/object_store.py --write bench/OBJECT_STORE_RESULTS.md
	$(BIN)/python bench/history.py --write bench/HISTORY_RESULTS.md

clean:
	rm -rf $(VENV) .polyshift .pytest_cache .ruff_cache *.egg-info
