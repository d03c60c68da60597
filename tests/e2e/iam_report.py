"""The IAM report of an end-to-end session: which grants of template.yaml no call made during the tests used.

A grant is (principal, policy statement, action pattern, resource pattern). Each local runtime reports the grants
its calls never used; a grant is unused by the session if every runtime deploying template.yaml reports it. Some
grants cannot be used locally, and are listed here with the reason.
"""

from __future__ import annotations

import fnmatch

from tests.conftest import ROOT

REPORT = ROOT / ".local-runtime" / "iam-unused-grants.txt"
UNUSED_PER_RUNTIME: list[set[tuple[str, ...]]] = []

UNUSABLE_LOCALLY: dict[tuple[str, str, str], str] = {
    # (principal, statement, action) patterns -> why no local call can use the grant
    ("*", "AWSLambda*ExecutionRole#*", "logs:*"): (
        "Lambda's runtime sends the function's output to CloudWatch Logs; locally it goes to log stream files"
    ),
    ("*", "AWSLambdaDynamoDBExecutionRole#*", "dynamodb:ListStreams"): (
        "the local poller reads the stream its mapping names (DescribeStream), as CloudFormation resolved it; it"
        " never lists streams"
    ),
    ("*", "AWSXrayWriteOnlyAccess#*", "xray:*"): (
        "X-Ray is not played locally: segments go to the X-Ray daemon, not through an API the edge serves"
    ),
    ("ScriptExecutionStateMachine", "*", "states:StartExecution"): (
        "a Distributed Map starts its child executions itself; moto does so without API calls"
    ),
    ("ScriptExecutionStateMachine", "*", "states:DescribeExecution"): (
        "a Distributed Map watches its child executions itself; moto does so without API calls"
    ),
    ("ScriptExecutionStateMachine", "*", "states:StopExecution"): (
        "a Distributed Map stops its child executions itself; moto does so without API calls"
    ),
    ("RunBatchFunction", "*", "ssm:CancelCommand"): (
        "cancels a command sent while the task was being cancelled: a race no test can time"
    ),
    ("RunBatchFunction", "*", "ssm:ListCommands"): (
        "finds the command an attempt sent before it died without recording it; tests/integration covers it"
        " in-process (test_a_retried_batch_step_never_sends_its_command_twice), where no IAM check applies"
    ),
    ("ApiFunction", "*IdempotencyTableAccessPolicy#*", "dynamodb:DeleteItem"): (
        "Powertools' idempotency utility deletes a key's record when the request under it fails (a workflow that"
        " could not start): tests/integration covers it in-process (test_a_request_that_failed_may_be_repeated_with"
        "_its_key), where no IAM check applies"
    ),
    ("FinishRunFunction", "*", "ssm:CancelCommand"): (
        "cancels the commands still running when the workflow itself fails; tests/integration covers it in-process,"
        " where no IAM check applies"
    ),
}


def _why_unusable(grant: tuple[str, ...]) -> str | None:
    principal, statement, action = grant[0], grant[1], grant[2]
    for (who, where, what), why in UNUSABLE_LOCALLY.items():
        if fnmatch.fnmatch(principal, who) and fnmatch.fnmatch(statement, where) and fnmatch.fnmatch(action, what):
            return why
    return None


def _unused() -> set[tuple[str, ...]]:
    return set.intersection(*UNUSED_PER_RUNTIME) if UNUSED_PER_RUNTIME else set()


def unexpected() -> list[tuple[str, ...]]:
    return sorted(grant for grant in _unused() if _why_unusable(grant) is None)


def summary() -> str:
    """The report (also written to .local-runtime/iam-unused-grants.txt); empty if no local runtime ran."""
    if not UNUSED_PER_RUNTIME:
        return ""
    lines = [f"{len(UNUSED_PER_RUNTIME)} local runtimes; grants of template.yaml that no call used:"]
    for grant in sorted(_unused()):
        why = _why_unusable(grant)
        lines.append(f"  {'  ' if why else '! '}{' | '.join(grant)}" + (f"\n      ({why})" if why else ""))
    bad = unexpected()
    lines.append(
        f"{len(bad)} unexpected (marked !): add a test that uses them, or narrow the policy"
        if bad
        else "none unexpected"
    )
    text = "\n".join(lines)
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text(text + "\n")
    return text


def refused(denials: list[dict[str, str]]) -> str:
    return "IAM refused calls that AWS would refuse too:\n" + "\n".join(
        f"  {d['principal']}: {d['message']}" for d in denials
    )
