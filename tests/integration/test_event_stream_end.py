"""The event stream's answer to a client that reconnects after a task ended: 204 only once it has the task's end."""

from __future__ import annotations

import json

from longrun import lifecycle
from longrun.change_feed import event_id
from longrun.event_stream import EventStream
from longrun.links import Links
from longrun.records import TaskEventType, TaskStatus
from tests.conftest import submission
from tests.integration.conftest import Deployment
from tests.integration.test_store import caller, task_id

ARN = "arn:aws:states:us-east-1:123456789012:execution:m:x"


def test_a_task_that_ended_before_its_end_was_kept_is_streamed_not_answered_204(deployed: Deployment) -> None:
    """The task's row can say it has ended while the publisher has not kept its finished event yet: a client that
    reconnects then must get a stream (which waits for the end), not 204, which would stop it for good."""
    request = submission({"device-ids": ["d0"], "script-url": "scripts/a.sh"})
    deployed.store.create_task(
        task_id(1), "script-execution", caller("alice"), request.settings, request.device_ids, ARN
    )
    deployed.store.change_status(task_id(1), TaskStatus.CANCELLING, [TaskStatus.SUBMITTED])
    task = lifecycle.finish(deployed.store, task_id(1), TaskStatus.CANCELLED)
    stream = EventStream(deployed.store, Links())
    assert stream.open(caller("alice"), task_id(1), "0") is not None
    end = event_id(task.version, TaskEventType.FINISHED)
    deployed.store.keep_event(task_id(1), end, json.dumps({"type": TaskEventType.FINISHED.value, "id": end}))
    assert stream.open(caller("alice"), task_id(1), str(end - 1)) is not None  # it has not seen the end
    assert stream.open(caller("alice"), task_id(1), str(end)) is None  # it has: 204
