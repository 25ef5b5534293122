"""The release lifecycle's vocabulary: every closed set of words the engine writes to the
control plane, shows to users or reads back to decide what to do.

The values are the exact words the journal, the runs table, the ledgers, the audit log and the
JSON output have always held, so a control plane written by an earlier polyshift reads the same.
Recovery decides finish-or-undo from these enums, never from literals of its own.
"""

from __future__ import annotations

from enum import StrEnum


class Step(StrEnum):
    """A journaled step of a run. Each is written as intent before it happens and done or failed
    after (``Phase``); a run's journal is the sequence recover replays."""

    PLAN = "plan"                # rollback/restore runs: what the run will change, before it changes it
    PREFLIGHT = "preflight"
    LOCK = "lock"
    RELEASE = "release"          # a release began changing stores (intent) or gave up cleanly (abandoned)
    SNAPSHOT = "snapshot"        # pre-release fingerprint of a store's scope
    BACKUP = "backup"
    FORWARD = "forward"
    LOCK_ATTEMPT = "lock-attempt"  # one try at a step's locks (done: it got them and committed)
    VALIDATE = "validate"
    INVARIANTS = "invariants"
    CUTOVER = "cutover"
    STAGE = "stage"              # one flag stage: move, bake, gates
    KILL = "kill"                # the release flag killed
    UNDO = "undo"                # the whole undo of a release
    UNDO_STORE = "undo-store"    # one store's compensation could not begin
    ROLLBACK = "rollback"        # a store's rollback step
    VERIFY = "verify"            # a store's scope compared with its pre-step fingerprint
    RESTORE = "restore"
    COMPLETE = "complete"


class Phase(StrEnum):
    INTENT = "intent"
    DONE = "done"
    FAILED = "failed"
    ABANDONED = "abandoned"      # only with RELEASE: nothing was changed, the run is over


# The journal entries that end a release run one way or the other.
RELEASE_ENDINGS: frozenset[tuple[Step, Phase]] = frozenset({
    (Step.COMPLETE, Phase.DONE), (Step.UNDO, Phase.DONE), (Step.RELEASE, Phase.ABANDONED),
})

# The step that says a run began changing stores, per kind of run.
BEGAN_CHANGING: frozenset[Step] = frozenset({Step.RELEASE, Step.ROLLBACK, Step.RESTORE})


class Direction(StrEnum):
    """Which script of a migration runs: the one word used from file names to adapters.

    The ledgers store the older words ``up``/``down`` (``ledger_word``) so that ledgers already in
    users' databases, and earlier polyshift versions reading newer ones, keep their meaning."""

    FORWARD = "forward"
    ROLLBACK = "rollback"

    @property
    def ledger_word(self) -> str:
        return _LEDGER_WORDS[self]

    @classmethod
    def from_ledger(cls, word: str) -> Direction:
        try:
            return _FROM_LEDGER[word]
        except KeyError:
            raise ValueError(f"not a ledger direction: {word!r}") from None


_LEDGER_WORDS = {Direction.FORWARD: "up", Direction.ROLLBACK: "down"}
_FROM_LEDGER = {"up": Direction.FORWARD, "down": Direction.ROLLBACK,
                "forward": Direction.FORWARD, "rollback": Direction.ROLLBACK}


class RunCommand(StrEnum):
    """The command a run records; the runs table stores its value."""

    UP = "up"
    RECOVER = "recover"
    EMERGENCY_ROLLBACK = "emergency-rollback"
    ROLLBACK = "rollback"
    RESTORE = "restore"
    BASELINE = "baseline"


RELEASE_COMMANDS: tuple[RunCommand, ...] = (RunCommand.UP, RunCommand.RECOVER, RunCommand.EMERGENCY_ROLLBACK)
# Change stores outside a release, journaled the same way; recover finishes or undoes them too.
STORE_COMMANDS: tuple[RunCommand, ...] = (RunCommand.ROLLBACK, RunCommand.RESTORE)
CHANGING_COMMANDS: tuple[RunCommand, ...] = RELEASE_COMMANDS + STORE_COMMANDS


class RunStatus(StrEnum):
    """How a run ended (or that it has not)."""

    RUNNING = "running"
    NEEDS_RECOVERY = "needs-recovery"          # a step began and did not settle: only recover may go on
    SUCCEEDED = "succeeded"
    FAILED = "failed"                          # nothing was changed
    ROLLED_BACK = "rolled-back"                # changes were undone and verified
    STOPPED_PART_WAY = "stopped-part-way"      # rollback --to: some steps rolled back, then one settled failed
    UNVERIFIED = "unverified"                  # a restore that could not be verified
    RECOVERED = "recovered"                    # closed by recover
    RECOVERED_UNVERIFIED = "recovered-unverified"


UNFINISHED: tuple[RunStatus, ...] = (RunStatus.RUNNING, RunStatus.NEEDS_RECOVERY)


class Action(StrEnum):
    """What happened to one migration in a command's outcome. A failed rollback step ends as:
    nothing it did is left (unchanged), the backup taken just before it was restored and verified
    (restored), or neither could be verified (unverified)."""

    APPLIED = "applied"
    WOULD_APPLY = "would-apply"
    ROLLED_BACK = "rolled-back"
    WOULD_ROLL_BACK = "would-roll-back"
    FAILED_UNCHANGED = "failed-unchanged"
    FAILED_RESTORED = "failed-restored"
    FAILED_UNVERIFIED = "failed-unverified"
    NOT_ATTEMPTED = "not-attempted"


SETTLED: tuple[Action, ...] = (Action.FAILED_UNCHANGED, Action.FAILED_RESTORED)


class ReleaseEvent(StrEnum):
    """Names users see in logs and hooks; each is also the audit action ``release.<name>``."""

    STARTED = "started"
    STAGE_ADVANCED = "stage_advanced"
    GATE_FAILED = "gate_failed"
    ROLLBACK_INITIATED = "rollback_initiated"
    ROLLBACK_FAILED = "rollback_failed"
    INTEGRITY_WARNING = "integrity_warning"
    COMPLETED = "completed"
    ROLLED_BACK = "rolled_back"
    RECOVERED = "recovered"
    FLAG_KILLED = "flag_killed"

    @property
    def audit_action(self) -> str:
        return f"release.{self.value}"


class Progress(StrEnum):
    """Per-step notices the engine hands to whatever displays a command (the CLI's renderer)."""

    MIGRATION = "migration"
    BACKUP = "backup"
    APPLIED = "applied"
    FIGURES = "figures"
    DATA_AT_RISK = "data-at-risk"
    RESTORE = "restore"
    ROLLED_BACK = "rolled-back"
    WOULD_RELEASE = "would-release"
    BAKE = "bake"
    GATES = "gates"
    HOOK_FAILED = "hook-failed"
    NOTICES = "notices"          # what a store said while a step ran (PostgreSQL NOTICE/WARNING)


class RehearsalCheck(StrEnum):
    """What ``polyshift rehearse`` proves of each release in each of its stores, in the order it
    proves it; each is one JUnit test case (release by store by check). ``GATES`` belongs to the
    release as a whole."""

    PREFLIGHT = "preflight"                    # what `up` checks before changing anything would pass
    BACKUP = "backup"                          # a verified backup of the release scope
    FORWARD = "forward"
    VALIDATE = "validate"
    INVARIANTS = "invariants"
    GATES = "gates"
    ROLLBACK = "rollback"                      # the rollback step runs
    ROLLBACK_RESTORES = "rollback-restores"    # ... and leaves schema and data as they were before the release
    FORWARD_AGAIN = "forward-again"
    IDEMPOTENT = "idempotent"                  # forward, rollback, forward ends where the first forward did
    RESTORE = "restore"                        # the release backup, restored onto the forwarded state, verifies
    FORWARD_AFTER_RESTORE = "forward-after-restore"  # the restored state takes the release again (a later release follows)


class CheckStatus(StrEnum):
    PASSED = "passed"
    FAILED = "failed"
    SKIPPED = "skipped"                        # not applicable, or an earlier check failed


class DataSource(StrEnum):
    """Where a rehearsal's data comes from."""

    SCHEMA = "schema"            # the migrations' own history on empty (or staging) stores
    PRODUCTION = "production"    # a verified read-only backup of the pending releases' scopes
    BACKUP = "backup"            # an existing rollback point (--from-backup ID)
