"""Lock-hazard analysis side by side: squawk and polyshift on the measured corpus.

Every case of tests/data/lock_hazards.toml (statements from squawk's and Atlas's rule
documentation, their ground truth measured on PostgreSQL 18 by bench/lock_corpus_measure.py) is
given, alone (its setup is the pre-existing database, not part of the migration), to:

  - squawk (``squawk-cli`` from PyPI, ``--pg-version 18.0``) with its default rules: the baseline;
  - squawk with every rule, opt-in rules included;
  - squawk with only its lock rules, and with its lock, data-loss and breaking-change rules (the
    style and timeout rules excluded with ``--exclude``);
  - polyshift's lock-hazard analysis, on the text alone and with the catalog of the case's database
    (set up as the corpus measured it), as `plan` and `up` run it.

A contender flags a case when it reports anything for it. Counted per measured kind: lock hazards
caught, data losses caught, breaking changes and failing statements caught, and false alarms on
safe statements (kind ``none``); the hazard and false-alarm ratios are to the baseline, in the same
run. polyshift is also scored on predicting which statements must run outside a transaction.

    python bench/lock_hazards.py [--cases] [--write bench/LOCK_HAZARDS_RESULTS.md]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.common import write_results  # noqa: E402
from bench.lock_corpus_measure import Case, Corpus, Measurer, load_corpus, server_url  # noqa: E402
from polyshift.adapters.postgres.analysis import analyze_sql  # noqa: E402
from polyshift.adapters.postgres.catalog import CatalogFacts  # noqa: E402
from polyshift.adapters.postgres.hazards import Facts  # noqa: E402
from polyshift.framework.core.errors import MigrationLoadError  # noqa: E402
from polyshift.framework.core.migration import Risk  # noqa: E402

PG_VERSION = "18.0"
# squawk's rules by subject (names as squawk 2.x spells them; see https://squawkhq.com/docs/rules).
SQUAWK_LOCK_RULES = frozenset({
    "adding-field-with-default", "adding-foreign-key-constraint", "adding-not-nullable-field",
    "adding-serial-primary-key-field", "changing-column-type", "constraint-missing-not-valid",
    "disallowed-unique-constraint", "require-concurrent-index-creation", "require-concurrent-index-deletion",
    "require-concurrent-partition-detach", "require-concurrent-reindex", "prefer-repack",
    "ban-alter-domain-with-add-constraint",
})
SQUAWK_DATA_AND_BREAKING_RULES = frozenset({
    "ban-drop-column", "ban-drop-table", "ban-drop-database", "ban-truncate-cascade", "ban-drop-not-null",
    "renaming-column", "renaming-table", "adding-required-field", "ban-concurrent-index-creation-in-transaction",
})
SQUAWK_OTHER_RULES = frozenset({  # style, naming, robustness and timeout settings
    "prefer-bigint-over-int", "prefer-bigint-over-smallint", "prefer-identity", "prefer-robust-stmts",
    "prefer-text-field", "prefer-timestamptz", "ban-char-field", "transaction-nesting",
    "ban-create-domain-with-constraint", "ban-uncommitted-transaction", "require-enum-value-ordering",
    "require-table-schema", "identifier-too-long", "require-lock-timeout", "require-statement-timeout",
    "ban-duplicate-column-assignments",
})
SQUAWK_OPT_IN_RULES = ("require-table-schema", "require-timeout-settings")

KINDS = ("lock", "data-loss", "breaking", "fails")


@dataclass(frozen=True)
class Verdict:
    flagged: bool
    detail: str                  # what the contender said, shortly (rules, or risk and notes)
    rating: str = ""             # polyshift only: the highest risk category
    outside_transaction: bool = False  # polyshift only: predicted to need running outside a transaction


def polyshift_verdict(sql: str, facts: Facts | None = None) -> Verdict:
    """polyshift's analysis of one migration script: flagged when it raises any finding (lock,
    data-loss, breaking, fails). ``facts``: the catalog of the case's database (None: text only)."""
    try:
        statements = analyze_sql(sql, origin="corpus", facts=facts)
    except MigrationLoadError as exc:
        return Verdict(True, f"refused: {exc}", "C")
    rating = Risk.highest([st.risk for st in statements])
    findings = [f for st in statements for f in st.findings]
    outside = any(st.non_transactional for st in statements)
    detail = rating.value + (f" ({', '.join(sorted({f.code for f in findings}))})" if findings else "")
    return Verdict(bool(findings), detail, rating.value, outside)


def polyshift_with_catalog(corpus: Corpus) -> dict[str, Verdict]:
    """Each case analysed against a real PostgreSQL 18 database set up as the corpus measured it."""
    import psycopg

    out = {}
    with server_url() as url:
        measurer = Measurer(url, corpus.fixtures)
        for case in corpus.cases:
            with measurer._database(case) as db, psycopg.connect(db, autocommit=True) as conn:
                for stmt in case.session.split(";"):
                    if stmt.strip():
                        conn.execute(stmt)
                out[case.id] = polyshift_verdict(case.sql, CatalogFacts(conn))
    return out


def squawk_binary() -> str:
    found = shutil.which("squawk") or str(Path(sys.executable).parent / "squawk")
    if not Path(found).exists():
        raise SystemExit("squawk not found: pip install squawk-cli")
    return found


def squawk_version(binary: str) -> str:
    return subprocess.run([binary, "--version"], capture_output=True, text=True, check=True).stdout.strip()


def run_squawk(binary: str, cases: list[Case], extra: list[str]) -> dict[str, Verdict]:
    """One squawk run over every case (one file each); the rules it reports per case."""
    with tempfile.TemporaryDirectory(prefix="squawk-corpus-") as tmp:
        files = {}
        for n, case in enumerate(cases):
            path = Path(tmp) / f"{n:03d}.sql"
            path.write_text(case.sql.rstrip().rstrip(";") + ";\n")
            files[str(path)] = case.id
        proc = subprocess.run([binary, "--reporter", "json", "--pg-version", PG_VERSION, *extra, *files],
                              capture_output=True, text=True)
        if proc.returncode not in (0, 1):
            raise SystemExit(f"squawk failed ({proc.returncode}): {proc.stderr[-2000:]}")
        rules: dict[str, list[str]] = {case_id: [] for case_id in files.values()}
        for violation in json.loads(proc.stdout or "[]"):
            case_id = files[violation["file"]]
            if violation["rule_name"] not in rules[case_id]:
                rules[case_id].append(violation["rule_name"])
    return {case_id: Verdict(bool(found), ", ".join(found)) for case_id, found in rules.items()}


def squawk_configurations(binary: str) -> dict[str, list[str]]:
    known = SQUAWK_LOCK_RULES | SQUAWK_DATA_AND_BREAKING_RULES | SQUAWK_OTHER_RULES
    return {
        "squawk, default rules (baseline)": [],
        "squawk, all rules (opt-in included)": ["--include", ",".join(SQUAWK_OPT_IN_RULES)],
        "squawk, lock rules only": ["--exclude", ",".join(sorted(known - SQUAWK_LOCK_RULES))],
        "squawk, lock + data-loss + breaking rules": [
            "--exclude", ",".join(sorted(known - SQUAWK_LOCK_RULES - SQUAWK_DATA_AND_BREAKING_RULES))],
    }


@dataclass
class Score:
    caught: dict[str, int]
    false_alarms: int
    missed: dict[str, list[str]]
    alarms: list[str]

    @property
    def hazards(self) -> int:
        return self.caught["lock"] + self.caught["data-loss"]


def score(corpus: Corpus, verdicts: dict[str, Verdict]) -> Score:
    caught = dict.fromkeys(KINDS, 0)
    missed: dict[str, list[str]] = {kind: [] for kind in KINDS}
    alarms = []
    for case in corpus.cases:
        kind = corpus.recorded[case.id]["kind"]
        flagged = verdicts[case.id].flagged
        if kind == "none":
            if flagged:
                alarms.append(case.id)
        elif flagged:
            caught[kind] += 1
        else:
            missed[kind].append(case.id)
    return Score(caught, len(alarms), missed, alarms)


def _ratio(value: int, baseline: int) -> str:
    return f"{value / baseline:.2f}" if baseline else "n/a"


def report(corpus: Corpus, contenders: dict[str, dict[str, Verdict]], polyshift_label: str, version: str,
           show_cases: bool) -> str:
    totals = {kind: sum(1 for c in corpus.cases if corpus.recorded[c.id]["kind"] == kind) for kind in (*KINDS, "none")}
    scores = {name: score(corpus, verdicts) for name, verdicts in contenders.items()}
    baseline = next(iter(scores.values()))
    lines = [
        f"{len(corpus.cases)} statements from squawk's and Atlas's rule documentation, ground truth measured on "
        f"PostgreSQL 18 (tests/data/lock_hazards.toml): {totals['lock']} lock hazards, {totals['data-loss']} data "
        f"losses, {totals['breaking']} breaking changes, {totals['fails']} failing statements, {totals['none']} safe. "
        f"{version}, --pg-version {PG_VERSION}, same run. A contender flags a case when it reports anything for it. "
        "Baseline: squawk with its default rules.",
        "",
        f"| contender | lock hazards caught (of {totals['lock']}) | data loss caught (of {totals['data-loss']}) "
        f"| breaking caught (of {totals['breaking']}) | failing caught (of {totals['fails']}) "
        f"| false alarms on safe (of {totals['none']}) | hazards caught, ratio to baseline "
        "| false alarms, ratio to baseline |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, s in scores.items():
        lines.append(f"| {name} | {s.caught['lock']} | {s.caught['data-loss']} | {s.caught['breaking']} | "
                     f"{s.caught['fails']} | {s.false_alarms} | {_ratio(s.hazards, baseline.hazards)} | "
                     f"{_ratio(s.false_alarms, baseline.false_alarms)} |")

    polyshift = contenders[polyshift_label]
    data_loss = [c for c in corpus.cases if corpus.recorded[c.id]["kind"] == "data-loss"]
    rated_c = sum(1 for c in data_loss if polyshift[c.id].rating == "C")
    outside = [c for c in corpus.cases if corpus.recorded[c.id]["outside_transaction"]]
    predicted = sum(1 for c in outside if polyshift[c.id].outside_transaction)
    wrongly = [c.id for c in corpus.cases if polyshift[c.id].outside_transaction and not corpus.recorded[c.id]["outside_transaction"]]
    lines += [
        "",
        f"{polyshift_label}: data losses rated C: {rated_c} of {len(data_loss)}; statements that must run outside "
        f"a transaction (SQLSTATE 25001 measured) predicted: {predicted} of {len(outside)}"
        + (f", predicted wrongly for {', '.join(wrongly)}" if wrongly else "") + ".",
        "",
    ]
    safe_ids = [c.id for c in corpus.cases if corpus.recorded[c.id]["kind"] == "none"]
    for name, s in scores.items():
        # Whichever list is shorter: the default configurations flag nearly every DDL statement
        # through their timeout rules, so the few safe statements they pass say more.
        passed = [case_id for case_id in safe_ids if case_id not in s.alarms]
        alarms = (f"false alarms: {', '.join(s.alarms) or 'none'}" if len(s.alarms) <= len(passed)
                  else f"false alarms on every safe statement but: {', '.join(passed) or 'none'}")
        lines.append(f"{name}: lock hazards missed: {', '.join(s.missed['lock']) or 'none'}; "
                     f"data losses missed: {', '.join(s.missed['data-loss']) or 'none'}; {alarms}.")
        lines.append("")
    if show_cases:
        names = list(contenders)
        lines += ["| case | kind | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names)]
        for case in corpus.cases:
            cells = []
            for name in names:
                v = contenders[name][case.id]
                cells.append(("**flag** " if v.flagged else "") + v.detail.replace("|", "/"))
            lines.append(f"| {case.id} | {corpus.recorded[case.id]['kind']} | " + " | ".join(cells) + " |")
    return "\n".join(lines).rstrip() + "\n"


def evaluate(corpus: Corpus) -> tuple[dict[str, dict[str, Verdict]], str, str]:
    binary = squawk_binary()
    contenders = {name: run_squawk(binary, corpus.cases, extra) for name, extra in squawk_configurations(binary).items()}
    contenders["polyshift, the text alone"] = {case.id: polyshift_verdict(case.sql) for case in corpus.cases}
    label = "polyshift, text and catalog (as `plan` and `up` run it)"
    contenders[label] = polyshift_with_catalog(corpus)
    return contenders, label, squawk_version(binary)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", action="store_true", help="add a per-case table")
    parser.add_argument("--write", type=Path, help="write the results as markdown to this file")
    args = parser.parse_args(argv)
    corpus = load_corpus()
    contenders, label, version = evaluate(corpus)
    text = report(corpus, contenders, label, version, args.cases)
    print(text)
    if args.write:
        write_results(args.write, "Lock-hazard analysis: squawk vs polyshift on a measured corpus",
                      "python bench/lock_hazards.py" + (" --cases" if args.cases else ""), text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
