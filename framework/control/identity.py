"""Which runner did something: host, process and, inside a CI system, the job.

Several CI jobs on several machines share one control plane; when a lock is held or a run was
left unfinished, the operator needs to know which pipeline to look at, not only a process id on
a machine that may be gone. Every run, journal entry, audit entry and lock holder carries this.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass

# (variable naming the job, CI system, variable adding detail to it), first match wins.
# POLYSHIFT_CI_JOB names the job for any other system.
CI_JOB_VARIABLES: tuple[tuple[str, str, str | None], ...] = (
    ("POLYSHIFT_CI_JOB", "ci", None),
    ("GITHUB_RUN_ID", "github-actions", "GITHUB_JOB"),
    ("CI_JOB_ID", "gitlab", "CI_PROJECT_PATH"),
    ("BUILDKITE_JOB_ID", "buildkite", "BUILDKITE_PIPELINE_SLUG"),
    ("CIRCLE_WORKFLOW_JOB_ID", "circleci", "CIRCLE_JOB"),
    ("BUILD_TAG", "jenkins", None),
)


@dataclass(frozen=True)
class RunnerIdentity:
    host: str
    pid: int
    ci_job: str | None = None   # "github-actions 9876543210/2 (deploy)"

    def label(self) -> str:
        """One line, as the journal, the audit log, lock holders and ``status`` show it."""
        return f"{self.host} pid={self.pid}" + (f", {self.ci_job}" if self.ci_job else "")


def ci_job(environ: dict[str, str] | None = None) -> str | None:
    env = os.environ if environ is None else environ
    for variable, system, detail in CI_JOB_VARIABLES:
        job = env.get(variable, "").strip()
        if not job:
            continue
        if system == "github-actions" and env.get("GITHUB_RUN_ATTEMPT"):
            job = f"{job}/{env['GITHUB_RUN_ATTEMPT']}"
        extra = env.get(detail, "").strip() if detail else ""
        text = f"{system} {job}" + (f" ({extra})" if extra else "")
        return text[:150]
    return None


def this_runner() -> RunnerIdentity:
    return RunnerIdentity(socket.gethostname(), os.getpid(), ci_job())
