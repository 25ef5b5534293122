"""Files written by ``polyshift init`` and ``polyshift new``."""

CONFIG = """\
# polyshift configuration. ${VAR} and ${VAR:-default} read the environment;
# passwords never appear in polyshift's output, logs, audit entries or state database.
[project]
migrations = "migrations"                     # one folder per store: migrations/<store>/
state_url = "sqlite:///.polyshift/state.db"   # run journal, audit chain, rollback points
backups = ".polyshift/backups"                # verified backup artifacts (0700)

[stores.main]
kind = "postgres"
url = "${DATABASE_URL:-postgresql://postgres@127.0.0.1:5432/postgres}"
lock_timeout = "5s"          # lock wait of statements outside a transaction (CREATE INDEX CONCURRENTLY)
statement_timeout = "5min"   # SET LOCAL statement_timeout for each step
retry_deadline = "60s"       # a step's locks are tried for in short attempts until then
# lock_retry = ["100ms/50ms", "100ms/100ms", "150ms/250ms", "200ms/500ms", "200ms/1s", "200ms/2s"]
lock_wait = "0s"             # how long to wait for another run's lock before exit 2
"""

SQL_FORWARD = """\
-- Forward step of {id}. Runs in one transaction, taking its locks in short attempts.
-- Directives are header lines of the form  -- polyshift: backup=users,orders
-- (backup scope, inferred when omitted), flag=name, risk=A|B|C, irreversible, noop
-- (a step empty on purpose; a step with no statements is refused otherwise), and
-- allow=PS130 (take a lock hazard on a large table anyway; 'polyshift plan' lists them).

"""

SQL_ROLLBACK = """\
-- Rollback step of {id}: undo the forward step exactly.

"""

SQL_VALIDATE = """\
-- Checks for {id}. A statement returning a row whose first value is false or NULL fails
-- validation, e.g.  SELECT count(*) = 0 FROM users WHERE email IS NULL;

"""

PYTHON = '''\
"""{id}."""

BACKUP: list[str] = []   # the scope to back up before forward; [] when there is nothing to lose
FLAG = None              # feature flag gating this change, if any
RISK = "C"               # A, B or C (Python migrations cannot be analysed, so C unless you say)


def forward(ctx):
    """ctx.client is the store's native client inside the step's transaction; may run more than once."""
    raise NotImplementedError


def rollback(ctx):
    raise NotImplementedError


def validate(ctx):
    """Return False or a list of failure messages to fail validation."""
    return []
'''
