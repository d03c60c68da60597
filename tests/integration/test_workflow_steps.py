"""The state machine's steps against AWS APIs, and the state machine definition as Step Functions reads it."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from longrun import run_command, workflow
from longrun.records import Batch, DeviceStatus, TaskStatus
from longrun.workflow import InvocationStillRunning
from tests.conftest import submission
from tests.integration.conftest import Deployment
from tests.integration.test_store import caller, outcome, running_batch, task_id

ARN = "arn:aws:states:us-east-1:123456789012:execution:m:x"


def new_task(deployed: Deployment, devices: int = 120, script: str = "scripts/a.sh") -> str:
    request = submission(
        {"device-ids": [f"d{i}" for i in range(devices)], "script-url": script, "max-concurrency": 100}
    )
    deployed.store.create_task(
        task_id(1), "script-execution", caller("alice"), request.settings, request.device_ids, ARN
    )
    return task_id(1)


def test_the_state_machine_is_the_asl_file_with_the_templates_substitutions(deployed: Deployment) -> None:
    definition = boto3.client("stepfunctions").describe_state_machine(stateMachineArn=deployed.state_machine_arn)
    assert "${" not in definition["definition"]
    for function in ("StartRunFunction", "RunBatchFunction", "ExpireBatchFunction", "FinishRunFunction"):
        assert deployed.stack.functions[function].arn in definition["definition"]


def test_start_run_fails_a_task_whose_script_is_missing(deployed: Deployment) -> None:
    tid = new_task(deployed)
    plan = deployed.workflow.start_run(tid)
    assert plan["batches"] == []
    task = deployed.store.get_task(tid)
    assert task is not None and task.status is TaskStatus.FAILED
    assert (
        task.status_reason
        == f"the script s3://{deployed.bucket}/scripts/a.sh does not exist (or longrun may not read it)"
    )
    assert task.counts.NOT_STARTED == 120


def test_start_run_plans_batches_without_device_ids(deployed: Deployment) -> None:
    boto3.client("s3").put_object(Bucket=deployed.bucket, Key="scripts/a.sh", Body=b"echo hi\n")
    tid = new_task(deployed)
    plan = deployed.workflow.start_run(tid)
    # four commands of 30 devices, all at once, 25 of each running: a command waits for two rounds of scripts
    assert plan == {"taskId": tid, "batches": [0, 1, 2, 3], "batchesAtOnce": 4, "batchWaitSeconds": 2 * 600 + 120}
    assert deployed.store.get_task(tid).status is TaskStatus.IN_PROGRESS  # type: ignore[union-attr]
    assert deployed.workflow.start_run(tid) == plan  # a retry of the step (its answer lost) plans the same batches
    deployed.store.change_status(tid, TaskStatus.CANCELLING, [TaskStatus.IN_PROGRESS])
    assert deployed.workflow.start_run(tid)["batches"] == []  # a task no longer running starts nothing


def test_finish_run_completes_with_the_outcome_of_each_device(deployed: Deployment) -> None:
    boto3.client("s3").put_object(Bucket=deployed.bucket, Key="scripts/a.sh", Body=b"echo hi\n")
    tid = new_task(deployed, devices=3)
    deployed.workflow.start_run(tid)
    batch = Batch(
        task_id=tid, number=0, start=0, device_ids=["d0", "d1", "d2"], nodes={"mi-0": 0, "mi-1": 1}, task_token="t"
    )
    deployed.store.start_batch(batch, failed={2: "no node"})
    deployed.store.finish_device(batch, 0, outcome("mi-0"))
    deployed.store.finish_device(batch, 1, outcome("mi-1", DeviceStatus.TIMED_OUT))
    assert deployed.workflow.finish_run(tid) == "COMPLETE"
    found = deployed.store.get_task_with_devices(tid)
    assert found is not None
    assert found[1].outcomes == "STF"
    assert found[0].status_reason is None


def test_finish_run_fails_a_task_whose_devices_are_still_running(deployed: Deployment) -> None:
    boto3.client("s3").put_object(Bucket=deployed.bucket, Key="scripts/a.sh", Body=b"echo hi\n")
    tid = new_task(deployed, devices=2)
    deployed.workflow.start_run(tid)
    running_batch(deployed.store, tid, 1)
    assert deployed.workflow.finish_run(tid) == "FAILED"
    task = deployed.store.get_task(tid)
    assert task is not None and task.status_reason == "the workflow ended with 1 devices still running"


def test_finish_run_with_an_error_fails_the_task_with_the_reason(deployed: Deployment) -> None:
    tid = new_task(deployed)
    status = deployed.workflow.finish_run(tid, {"Error": "States.Runtime", "Cause": "boom"})
    assert status == "FAILED"
    assert deployed.store.get_task(tid).status_reason == "the workflow failed: States.Runtime: boom"  # type: ignore[union-attr]


def test_a_retried_batch_step_waits_on_its_new_token(deployed: Deployment) -> None:
    """Each attempt of a .waitForTaskToken step has its own token: the batch's record must follow the latest, or the
    command's end would hand back a token nobody waits on."""
    boto3.client("s3").put_object(Bucket=deployed.bucket, Key="scripts/a.sh", Body=b"echo hi\n")
    tid = new_task(deployed, devices=2)
    deployed.workflow.start_run(tid)
    deployed.workflow.run_batch(tid, 0, "token-of-the-first-attempt")
    deployed.workflow.run_batch(tid, 0, "token-of-the-retry")
    batch = deployed.store.get_batch(tid, 0)
    assert batch is not None and batch.task_token == "token-of-the-retry"
    task = deployed.store.get_task(tid)
    assert task is not None and task.counts.FAILED == 2  # recorded once (no such devices), not twice


def test_a_retried_batch_step_never_sends_its_command_twice(
    deployed: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An attempt that sent the batch's command and died before recording it: the retry finds that command (by its
    comment, among the commands sent since the attempt began) instead of running the script on the devices again."""
    boto3.client("s3").put_object(Bucket=deployed.bucket, Key="scripts/a.sh", Body=b"echo hi\n")
    tid = new_task(deployed, devices=2)
    deployed.workflow.start_run(tid)
    resolution = run_command.Resolution(nodes={"d0": "mi-00000000000000000", "d1": "mi-00000000000000001"}, unknown={})
    monkeypatch.setattr(run_command, "resolve_devices", lambda devices, tag_key: resolution)
    sent: list[str] = []
    monkeypatch.setattr(run_command, "send_script", lambda **fields: sent.append(fields["comment"]) or "cmd-1")
    looked_up: list[datetime] = []

    def found(comment: str, since: datetime) -> str | None:
        looked_up.append(since)
        return "cmd-1" if comment in sent else None

    monkeypatch.setattr(run_command, "sent_command", found)
    real_record = deployed.store.set_batch_command
    monkeypatch.setattr(deployed.store, "set_batch_command", lambda *args: (_ for _ in ()).throw(TimeoutError()))
    with pytest.raises(TimeoutError):  # the first attempt dies once the command is sent
        deployed.workflow.run_batch(tid, 0, "token-1")
    monkeypatch.setattr(deployed.store, "set_batch_command", real_record)
    assert deployed.workflow.run_batch(tid, 0, "token-2") == {"batch": 0, "commandId": "cmd-1"}
    assert len(sent) == 1 and len(looked_up) == 1  # the retry looked, found it, and did not send again
    batch = deployed.store.get_batch(tid, 0)
    assert batch is not None and (batch.command_id, batch.task_token) == ("cmd-1", "token-2")


def test_a_send_whose_answer_is_lost_is_found_and_not_sent_again(
    deployed: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SendCommand has no idempotency token: the SDK makes one attempt, and when it fails in a way that may have sent
    the command (here a server error after SSM acted), the step looks for the command before sending again."""
    boto3.client("s3").put_object(Bucket=deployed.bucket, Key="scripts/a.sh", Body=b"echo hi\n")
    tid = new_task(deployed, devices=2)
    deployed.workflow.start_run(tid)
    resolution = run_command.Resolution(nodes={"d0": "mi-00000000000000000", "d1": "mi-00000000000000001"}, unknown={})
    monkeypatch.setattr(run_command, "resolve_devices", lambda devices, tag_key: resolution)
    ssm = boto3.client("ssm")
    calls: list[str] = []

    class LosesTheFirstAnswer:
        def send_command(self, **fields: Any) -> Any:
            answer = ssm.send_command(**fields)
            calls.append(answer["Command"]["CommandId"])
            if len(calls) == 1:
                raise ClientError(
                    {"Error": {"Code": "InternalFailure"}, "ResponseMetadata": {"HTTPStatusCode": 500}}, "SendCommand"
                )
            return answer

    monkeypatch.setattr(run_command, "_ssm_sending", LosesTheFirstAnswer)
    monkeypatch.setattr(workflow, "SEND_BACKOFF_SECONDS", 0.0)
    assert deployed.workflow.run_batch(tid, 0, "token-1") == {"batch": 0, "commandId": calls[0]}
    assert len(calls) == 1
    batch = deployed.store.get_batch(tid, 0)
    assert batch is not None and batch.command_id == calls[0]


def test_a_command_s_end_does_not_record_a_run_ssm_still_lists_as_going(
    deployed: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SSM's list can lag its events: a run it still shows as going is not recorded NOT_STARTED; the event is
    retried (the handler fails, Lambda retries it) and records the run once SSM shows how it ended."""
    boto3.client("s3").put_object(Bucket=deployed.bucket, Key="scripts/a.sh", Body=b"echo hi\n")
    tid = new_task(deployed, devices=1)
    deployed.workflow.start_run(tid)
    batch = running_batch(deployed.store, tid, 1)
    deployed.store.set_batch_command(tid, 0, "cmd-1", False)
    monkeypatch.setattr(run_command, "command_comment", lambda command_id: run_command.batch_comment(tid, 0))
    going = run_command.CommandRuns(ended={}, going={"mi-0": True})
    monkeypatch.setattr(run_command, "command_runs", lambda command_id, node_id=None: going)
    with pytest.raises(InvocationStillRunning):
        deployed.workflow.record_command("cmd-1")
    assert deployed.store.device_runs(tid, 0, 1) == {}
    ended = run_command.CommandRuns(ended={"mi-0": replace(outcome("mi-0"), command_id="cmd-1")}, going={})
    monkeypatch.setattr(run_command, "command_runs", lambda command_id, node_id=None: ended)
    assert deployed.workflow.record_command("cmd-1") == tid
    assert deployed.store.device_runs(tid, 0, 1)[0].status is DeviceStatus.SUCCESS
    assert batch.nodes == {"mi-0": 0}


def _reported(tid: str, statuses: dict[str, DeviceStatus], going: tuple[str, ...] = ()) -> run_command.CommandRuns:
    comment = run_command.batch_comment(tid, 0)
    return run_command.CommandRuns(
        ended={
            node: replace(outcome(node, status), command_id="cmd-1", comment=comment)
            for node, status in statuses.items()
        },
        going=dict.fromkeys(going, True),
    )


def test_a_batch_of_device_reports_is_recorded_in_one_transaction_per_task(
    deployed: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The queued reports of a task's devices: every device SSM lists as ended is recorded, with the task's counts,
    in a single transaction; a run SSM still lists as going is answered back, to be retried."""
    boto3.client("s3").put_object(Bucket=deployed.bucket, Key="scripts/a.sh", Body=b"echo hi\n")
    tid = new_task(deployed, devices=4)
    deployed.workflow.start_run(tid)
    running_batch(deployed.store, tid, 4)
    deployed.store.set_batch_command(tid, 0, "cmd-1", False)
    runs = _reported(
        tid, {"mi-0": DeviceStatus.SUCCESS, "mi-1": DeviceStatus.FAILED, "mi-2": DeviceStatus.SUCCESS}, ("mi-3",)
    )
    monkeypatch.setattr(run_command, "command_runs", lambda command_id, node_id=None: runs)
    transactions: list[int] = []
    real = deployed.store._transact
    monkeypatch.setattr(deployed.store, "_transact", lambda actions: transactions.append(len(actions)) or real(actions))
    recorded = deployed.workflow.record_outcomes({("cmd-1", node) for node in ("mi-0", "mi-1", "mi-2", "mi-3")})
    assert recorded == ({tid}, {("cmd-1", "mi-3")})
    assert transactions == [4]  # three devices and the task's counts
    task = deployed.store.get_task(tid)
    assert task is not None and (task.counts.SUCCESS, task.counts.FAILED, task.counts.RUNNING) == (2, 1, 1)
    assert {i: run.status for i, run in deployed.store.device_runs(tid, 0, 4).items()} == {
        0: DeviceStatus.SUCCESS,
        1: DeviceStatus.FAILED,
        2: DeviceStatus.SUCCESS,
    }


def test_reports_of_devices_recorded_meanwhile_count_once(
    deployed: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A device the command's end (or a redelivered message) recorded between the read and the write: the batch's
    transaction is refused, and each of the others is recorded on its own; nothing counts twice."""
    boto3.client("s3").put_object(Bucket=deployed.bucket, Key="scripts/a.sh", Body=b"echo hi\n")
    tid = new_task(deployed, devices=3)
    deployed.workflow.start_run(tid)
    batch = running_batch(deployed.store, tid, 3)
    deployed.store.set_batch_command(tid, 0, "cmd-1", False)
    runs = _reported(tid, dict.fromkeys(("mi-0", "mi-1", "mi-2"), DeviceStatus.SUCCESS))
    monkeypatch.setattr(run_command, "command_runs", lambda command_id, node_id=None: runs)
    assert deployed.store.finish_device(batch, 1, runs.ended["mi-1"])
    monkeypatch.setattr(deployed.store, "recorded_devices", lambda task, indexes: set())  # it was read before that
    reports = {("cmd-1", node) for node in ("mi-0", "mi-1", "mi-2")}
    assert deployed.workflow.record_outcomes(reports) == ({tid}, set())
    assert deployed.workflow.record_outcomes(reports) == ({tid}, set())  # again
    task = deployed.store.get_task(tid)
    assert task is not None and (task.counts.SUCCESS, task.counts.RUNNING) == (3, 0)
    assert len(deployed.store.device_runs(tid, 0, 3)) == 3


def test_reports_from_several_commands_of_a_task_share_one_transaction(
    deployed: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rolling scheduling runs many commands of a task at once, so a batch of reports spans them: still one
    transaction for the task, and the recorded check reads just those devices."""
    boto3.client("s3").put_object(Bucket=deployed.bucket, Key="scripts/a.sh", Body=b"echo hi\n")
    tid = new_task(deployed, devices=120)
    deployed.workflow.start_run(tid)
    first, third = running_batch(deployed.store, tid, 50, 0), running_batch(deployed.store, tid, 20, 2)
    deployed.store.set_batch_command(tid, 0, "cmd-0", False)
    deployed.store.set_batch_command(tid, 2, "cmd-2", False)
    ended = {
        ("cmd-0", "mi-3"): run_command.batch_comment(tid, 0),
        ("cmd-2", "mi-101"): run_command.batch_comment(tid, 2),
        ("cmd-2", "mi-117"): run_command.batch_comment(tid, 2),
    }

    def runs(command_id: str, node_id: str | None = None) -> run_command.CommandRuns:
        comment = ended[(command_id, node_id or "")]
        ended_run = replace(outcome(node_id or ""), command_id=command_id, comment=comment)
        return run_command.CommandRuns(ended={node_id or "": ended_run}, going={})

    monkeypatch.setattr(run_command, "command_runs", runs)
    transactions: list[int] = []
    real = deployed.store._transact
    monkeypatch.setattr(deployed.store, "_transact", lambda actions: transactions.append(len(actions)) or real(actions))
    assert deployed.workflow.record_outcomes(set(ended)) == ({tid}, set())
    assert transactions == [4]
    assert set(deployed.store.device_runs(tid, 0, 120)) == {3, 101, 117}
    assert deployed.store.recorded_devices(tid, [3, 101, 117, 118]) == {3, 101, 117}  # far apart: BatchGetItem
    assert deployed.store.recorded_devices(tid, [100, 101, 102]) == {101}  # close together: one query
    assert (first.number, third.number) == (0, 2)


def test_a_batch_whose_wait_ran_out_before_its_step_recorded_it_never_starts(
    deployed: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The batch step can take longer than the batch's wait (its calls retried under faults): the wait's end then
    comes first. Its devices end NOT_STARTED under the batch's record, and the late step sends no command."""
    boto3.client("s3").put_object(Bucket=deployed.bucket, Key="scripts/a.sh", Body=b"echo hi\n")
    tid = new_task(deployed, devices=2)
    deployed.workflow.start_run(tid)
    deployed.workflow.expire_batch(tid, 0)
    task = deployed.store.get_task(tid)
    assert task is not None and (task.counts.NOT_STARTED, task.counts.RUNNING, task.counts.PENDING) == (2, 0, 0)
    sent: list[str] = []
    monkeypatch.setattr(run_command, "send_script", lambda **fields: sent.append(fields["comment"]) or "cmd-1")
    assert deployed.workflow.run_batch(tid, 0, "token-late") == {"batch": 0, "commandId": None}
    assert sent == []
    assert deployed.workflow.finish_run(tid) == "COMPLETE"
