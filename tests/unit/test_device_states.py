"""Each device's current state (the devices routes): how it is derived from the records, how a path names a device,
and how pages and status filters walk the task while reading only what they cover."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from typing import Any, cast

import pytest

from longrun.api_requests import DEVICE_SCAN_WINDOW
from longrun.batching import task_batch_size
from longrun.config import Settings
from longrun.errors import BadRequest, DeviceNotFinished, DeviceNotFound, NoOutput
from longrun.links import Links
from longrun.models import DevicePage, DeviceState
from longrun.page_tokens import PageTokens
from longrun.records import DeviceCounts, DeviceRun, DeviceStatus, Owner, Task, TaskDevices, TaskSettings, TaskStatus
from longrun.store import owner_digest
from longrun.tasks import ScriptExecutions, find_device
from longrun.views import device_state

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
OWNER = Owner(key="iam:AIDAALICE", name="arn:aws:iam::123456789012:user/alice")
TASK_ID = "1a8afbb7-3b76-41fc-9ab8-5b2cd6b41367"
LINKS = Links("/v1")
HREF = f"/v1/device-management/script-execution/{TASK_ID}/devices"
OUTPUT = f"s3://bucket/output/{TASK_ID}/cmd/mi-1/awsrunShellScript/runShellScript/stdout"
SETTINGS = Settings(
    tasks_table="t",
    scripts_bucket="bucket",
    device_id_tag_key="DeviceId",
    output_prefix="output",
    state_machine_arn=None,
)


def task(status: TaskStatus, devices: int, max_concurrency: int = 50, **counts: int) -> Task:
    counts.setdefault("PENDING", devices - sum(counts.values()))
    return Task(
        id=TASK_ID,
        kind="script-execution",
        owner=OWNER.name,
        owner_key=owner_digest(OWNER.key),
        status=status,
        settings=TaskSettings(script_url="scripts/a.sh", timeout_seconds=60, max_concurrency=max_concurrency),
        device_count=devices,
        counts=DeviceCounts(**counts),
        created_at=NOW,
        updated_at=NOW,
    )


def run(index: int, status: DeviceStatus = DeviceStatus.SUCCESS, ran: bool = True, **fields: Any) -> DeviceRun:
    recorded: dict[str, Any] = {
        "exit_code": 0 if ran else None,
        "started_at": NOW if ran else None,
        "ended_at": NOW,
        "stdout_url": OUTPUT if ran else None,
    }
    return DeviceRun(index=index, device_id=f"d{index}", status=status, **(recorded | fields))


class FakeStore:
    """The store's reads the devices routes make, each one noted: which positions of DEVICE# and which batches."""

    def __init__(self, task: Task, devices: TaskDevices, runs: list[DeviceRun], batches: dict[int, set[int]]) -> None:
        self.task, self.devices = task, devices
        self.runs = {r.index: r for r in runs}
        self.batches = batches
        self.reads: list[tuple[str, int, int]] = []

    def get_task_with_devices(self, task_id: str) -> tuple[Task, TaskDevices] | None:
        return (self.task, self.devices) if task_id == self.task.id else None

    def device_runs(self, task_id: str, start: int, end: int) -> dict[int, DeviceRun]:
        self.reads.append(("DEVICE", start, end))
        return {i: r for i, r in self.runs.items() if start <= i < end}

    def sent_commands(self, task_id: str, first: int, end: int) -> dict[str, dict[str, int]]:
        return {}  # SSM is not asked which devices it holds back: every sent device shows RUNNING

    def batched_devices(self, task_id: str, first: int, end: int) -> set[int]:
        self.reads.append(("BATCH", first, end))
        return {i for n in range(first, end) for i in self.batches.get(n, set())}

    def positions_read(self) -> int:
        return sum(end - start for kind, start, end in self.reads if kind == "DEVICE")


TOKENS = PageTokens(None, keys=(b"unit-test-key",))


class ReadBack(ScriptExecutions):
    """The service, its pages of devices read back through the contract's model (longrun.models.DevicePage): each
    answer must be one."""

    def devices(self, *args: Any) -> Any:  # type: ignore[override]
        answer = super().devices(*args)
        page = DevicePage.model_validate(answer)
        assert page.model_dump(mode="json", by_alias=True) == answer
        return page


def service(store: FakeStore) -> ReadBack:
    return ReadBack(cast(Any, store), SETTINGS, TOKENS)


def shown(state: dict[str, Any]) -> DeviceState:
    """A device's state as the contract's model reads it; it must write it back the same."""
    model = DeviceState.model_validate(state)
    assert model.model_dump(mode="json", by_alias=True) == state
    return model


def position(token: str | None) -> str | None:
    """The position a page token holds (its middle part; the MAC is the sealer's to check)."""
    if token is None:
        return None
    body = token.split(".")[1]
    return base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)).decode()


def ids(count: int) -> list[str | int]:
    return [f"d{i}" for i in range(count)]


# --- one device's state ------------------------------------------------------------------------------------------


def test_a_recorded_device_shows_its_outcome_and_links_to_its_output() -> None:
    state = shown(
        device_state(task(TaskStatus.IN_PROGRESS, 2, SUCCESS=1), TaskDevices(ids=ids(2)), 0, run(0), False, LINKS)
    )
    assert state.model_dump(mode="json", by_alias=True) == {
        "device-id": "d0",
        "status": "SUCCESS",
        "exitCode": 0,
        "startedAt": "2026-11-27T12:00:00Z",
        "endedAt": "2026-11-27T12:00:00Z",
        "href": f"{HREF}/d0",
        "stdout": f"{HREF}/d0/stdout",
        "stderr": f"{HREF}/d0/stderr",
    }


def test_a_device_that_finished_without_running_has_no_output_links() -> None:
    failed = run(0, DeviceStatus.FAILED, ran=False, reason="no SSM managed node is tagged DeviceId=d0")
    state = shown(
        device_state(task(TaskStatus.IN_PROGRESS, 1, FAILED=1), TaskDevices(ids=ids(1)), 0, failed, False, LINKS)
    )
    assert (state.status, state.reason, state.stdout, state.stderr) == (DeviceStatus.FAILED, failed.reason, None, None)


@pytest.mark.parametrize(("batched", "status"), [(True, DeviceStatus.RUNNING), (False, DeviceStatus.PENDING)])
def test_while_the_task_runs_an_unrecorded_device_is_running_once_its_batch_started(
    batched: bool, status: DeviceStatus
) -> None:
    state = shown(device_state(task(TaskStatus.IN_PROGRESS, 1), TaskDevices(ids=ids(1)), 0, None, batched, LINKS))
    assert state.model_dump(mode="json", by_alias=True) == {"device-id": "d0", "status": status, "href": f"{HREF}/d0"}


def test_once_the_task_has_finished_an_unrecorded_device_never_started() -> None:
    finished = task(TaskStatus.CANCELLED, 2, CANCELLED=1, NOT_STARTED=1)
    state = shown(device_state(finished, TaskDevices(ids=ids(2), outcomes="CN"), 1, None, True, LINKS))
    assert (state.status, state.reason) == (DeviceStatus.NOT_STARTED, "the device never started")


def test_links_url_encode_the_device_id() -> None:
    assert LINKS.device(TASK_ID, "ec2:web-3") == f"{HREF}/ec2%3Aweb-3"
    assert LINKS.device(TASK_ID, "site/a+b=c@d") == f"{HREF}/site%2Fa%2Bb%3Dc%40d"
    assert LINKS.device(TASK_ID, 3) == f"{HREF}/3"


# --- which device a path names -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("devices", "wanted", "found"),
    [
        (["web-1", 3, "db-1"], "3", 1),
        (["web-1", 3, "db-1"], "db-1", 2),
        ([3, "3"], "3", 1),  # the exact string first
        (["3", 3], "3", 0),
        ([3], "03", None),  # an integer id by its decimal form only
        ([30], "3", None),
        (["web-1"], "WEB-1", None),
        ([], "x", None),
    ],
)
def test_a_path_names_a_string_id_equal_to_it_or_an_integer_id_in_decimal(
    devices: list[str | int], wanted: str, found: int | None
) -> None:
    assert find_device(devices, wanted) == found


def test_an_unknown_device_is_not_found_and_names_it() -> None:
    store = FakeStore(task(TaskStatus.IN_PROGRESS, 2), TaskDevices(ids=ids(2)), [], {})
    with pytest.raises(DeviceNotFound, match="has no device 'web-9'"):
        service(store).device(OWNER, TASK_ID, "web-9", LINKS)


# --- pages --------------------------------------------------------------------------------------------------------


def running_fleet(devices: int, max_concurrency: int, finished: int, started_batches: int) -> FakeStore:
    """A running task: the first ``finished`` devices recorded SUCCESS, every device of the first
    ``started_batches`` batches sent to its node."""
    size = task_batch_size(task(TaskStatus.IN_PROGRESS, devices, max_concurrency).settings, devices)
    batches = {n: set(range(n * size, min((n + 1) * size, devices))) for n in range(started_batches)}
    running = sum(len(b) for b in batches.values()) - finished
    state = task(TaskStatus.IN_PROGRESS, devices, max_concurrency, SUCCESS=finished, RUNNING=running)
    return FakeStore(state, TaskDevices(ids=ids(devices)), [run(i) for i in range(finished)], batches)


def walk(executions: ScriptExecutions, status: DeviceStatus | None, limit: int) -> tuple[list[Any], int]:
    """Every page in turn: the devices, and how many requests it took."""
    found, token, requests = [], None, 0
    while True:
        page = executions.devices(OWNER, TASK_ID, status, limit, token, LINKS)
        requests += 1
        found += page.items
        token = page.next_token
        if token is None:
            return found, requests


def test_a_page_reads_only_the_records_and_batches_of_the_devices_it_shows() -> None:
    store = running_fleet(devices=300, max_concurrency=20, finished=30, started_batches=3)
    token = TOKENS.seal("20", owner_digest(OWNER.key), f"devices:{TASK_ID}?status=")
    page = service(store).devices(OWNER, TASK_ID, None, 25, token, LINKS)
    assert [d.device_id for d in page.items] == [f"d{i}" for i in range(20, 45)]
    assert [d.status for d in page.items] == [DeviceStatus.SUCCESS] * 10 + [DeviceStatus.RUNNING] * 15
    assert position(page.next_token) == "45"
    assert store.reads == [("DEVICE", 20, 45), ("BATCH", 0, 1)]  # devices 30..44 are in batch 0 (50 devices each)


def test_pages_cover_every_device_once_in_request_order() -> None:
    store = running_fleet(devices=230, max_concurrency=50, finished=60, started_batches=2)
    found, requests = walk(service(store), None, 100)
    assert [d.device_id for d in found] == ids(230) and requests == 3
    counts = {status: sum(d.status is status for d in found) for status in DeviceStatus}
    # five commands of 46 devices (10 of each running at once): two sent, 92 devices
    assert (counts[DeviceStatus.SUCCESS], counts[DeviceStatus.RUNNING], counts[DeviceStatus.PENDING]) == (60, 32, 138)


def test_no_batch_is_read_when_no_device_is_running() -> None:
    store = FakeStore(task(TaskStatus.IN_PROGRESS, 10), TaskDevices(ids=ids(10)), [], {})
    page = service(store).devices(OWNER, TASK_ID, None, 100, None, LINKS)
    assert {d.status for d in page.items} == {DeviceStatus.PENDING}
    assert store.reads == [("DEVICE", 0, 10)]


@pytest.mark.parametrize("status", [DeviceStatus.RUNNING, DeviceStatus.PENDING, DeviceStatus.SUCCESS])
def test_a_status_filter_scans_in_bounded_windows_and_finds_every_match_once(status: DeviceStatus) -> None:
    store = running_fleet(devices=5_000, max_concurrency=50, finished=1_500, started_batches=60)  # 3,000 sent
    executions = service(store)
    pages = []
    token = None
    while True:
        before = store.positions_read()
        page = executions.devices(OWNER, TASK_ID, status, 100, token, LINKS)
        assert store.positions_read() - before <= DEVICE_SCAN_WINDOW
        assert len(page.items) <= 100
        pages.append(page)
        token = page.next_token
        if token is None:
            break
    found = [d for page in pages for d in page.items]
    expected = {
        DeviceStatus.SUCCESS: range(1_500),
        DeviceStatus.RUNNING: range(1_500, 3_000),
        DeviceStatus.PENDING: range(3_000, 5_000),
    }[status]
    assert [d.device_id for d in found] == [f"d{i}" for i in expected]
    assert {d.status for d in found} == {status}
    assert any(not page.items and page.next_token for page in pages) or status is not DeviceStatus.PENDING


def test_a_filtered_page_stops_at_its_limit_and_continues_after_its_last_device() -> None:
    store = running_fleet(devices=100, max_concurrency=10, finished=0, started_batches=1)
    page = service(store).devices(OWNER, TASK_ID, DeviceStatus.PENDING, 3, None, LINKS)
    assert [d.device_id for d in page.items] == ["d50", "d51", "d52"] and position(
        page.next_token
    ) == "53"  # batches of 50


def test_a_filter_no_device_can_match_reads_nothing() -> None:
    store = running_fleet(devices=100, max_concurrency=10, finished=0, started_batches=1)
    page = service(store).devices(OWNER, TASK_ID, DeviceStatus.FAILED, 100, None, LINKS)
    assert (page.items, page.next_token, store.reads) == ([], None, [])


def test_a_finished_task_s_outcomes_say_where_to_look() -> None:
    outcomes = "S" * 4_000 + "F" + "S" * 3_000 + "F" + "N" * 1_998
    finished = task(TaskStatus.COMPLETE, 9_000, SUCCESS=7_000, FAILED=2, NOT_STARTED=1_998)
    failed = [run(4_000, DeviceStatus.FAILED, exit_code=1), run(7_001, DeviceStatus.FAILED, exit_code=2)]
    store = FakeStore(finished, TaskDevices(ids=ids(9_000), outcomes=outcomes), failed, {})
    executions = service(store)
    first = executions.devices(OWNER, TASK_ID, DeviceStatus.FAILED, 100, None, LINKS)
    assert [d.device_id for d in first.items] == ["d4000"]  # the window starts at the first failure
    assert store.reads == [("DEVICE", 4_000, 4_001)]  # only the failed device's record
    second = executions.devices(OWNER, TASK_ID, DeviceStatus.FAILED, 100, first.next_token, LINKS)
    assert [d.device_id for d in second.items] == ["d7001"]
    last = executions.devices(OWNER, TASK_ID, DeviceStatus.FAILED, 100, second.next_token, LINKS)
    assert (last.items, last.next_token) == ([], None)
    never = executions.devices(OWNER, TASK_ID, DeviceStatus.NOT_STARTED, 2, None, LINKS)
    assert [(d.device_id, d.reason) for d in never.items] == [
        ("d7002", "the device never started"),
        ("d7003", "the device never started"),
    ]
    assert executions.devices(OWNER, TASK_ID, DeviceStatus.TIMED_OUT, 100, None, LINKS).items == []


@pytest.mark.parametrize("token", ["x", "-1", "10", "99", "1.5", ""])
def test_a_next_token_this_api_did_not_issue_is_a_bad_request(token: str) -> None:
    store = running_fleet(devices=10, max_concurrency=10, finished=0, started_batches=0)
    with pytest.raises(BadRequest):
        service(store).devices(OWNER, TASK_ID, None, 5, token, LINKS)


def test_another_callers_task_is_not_found() -> None:
    store = running_fleet(devices=3, max_concurrency=10, finished=0, started_batches=0)
    other = Owner(key="iam:AIDAMALLORY", name="mallory")
    with pytest.raises(Exception, match="no script-execution task"):
        service(store).devices(other, TASK_ID, None, 5, None, LINKS)


# --- output -------------------------------------------------------------------------------------------------------


def test_output_is_a_conflict_until_the_device_has_finished() -> None:
    store = running_fleet(devices=3, max_concurrency=1, finished=1, started_batches=2)
    with pytest.raises(DeviceNotFinished, match="its output is ready once it has finished"):
        service(store).device_output(OWNER, TASK_ID, "d1", "stdout")


def test_a_device_that_never_ran_has_no_output() -> None:
    finished = task(TaskStatus.COMPLETE, 2, FAILED=1, NOT_STARTED=1)
    failed = run(0, DeviceStatus.FAILED, ran=False, reason="no SSM managed node is tagged DeviceId=d0")
    store = FakeStore(finished, TaskDevices(ids=ids(2), outcomes="FN"), [failed], {})
    with pytest.raises(NoOutput, match=r"'d0' .* ended FAILED without running: no SSM managed node"):
        service(store).device_output(OWNER, TASK_ID, "d0", "stderr")
    with pytest.raises(NoOutput, match=r"'d1' .* ended NOT_STARTED without running: the device never started"):
        service(store).device_output(OWNER, TASK_ID, "d1", "stdout")
