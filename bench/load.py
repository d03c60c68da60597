"""A bounded load test of the API on loopback: 200 simultaneous submits, then 5,000 status polls.

Every submit carries its own Idempotency-Key and is repeated as longrun's client repeats it (with the same key, after
Retry-After or a second on 409, 429 and 5xx, and on a connection that failed) until it is accepted. Counted: the first
answers by status, 5xx, connections reset or refused, and duplicate tasks (tasks made beyond the one each key's answer
names, found by listing the caller's tasks). The polls are GETs of those
tasks, ``--poll-concurrency`` at a time, each on a new connection as a simple client makes them; reported with their
throughput, p50 and p99.

    python -m bench.load [--submits 200] [--polls 5000] [--poll-concurrency 50] [--api URL]

Without --api, a local runtime is started for the run (as ``make run`` starts it); with it, the API at URL (its
stage URL, e.g. http://127.0.0.1:3000/v1) is loaded as it is.
"""

from __future__ import annotations

import argparse
import http.client
import json
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from bench.common import RESOURCE, Local, percentile, save

SCRIPT = "scripts/hello.sh"
MAX_ATTEMPTS = 10


@dataclass
class Answer:
    status: int | None
    """None: the connection was reset, refused or closed without an answer"""
    seconds: float
    body: Any = None
    headers: dict[str, str] | None = None
    error: str | None = None


class Api:
    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.host, self.port, self.base = parts.hostname or "127.0.0.1", parts.port or 80, parts.path.rstrip("/")

    def call(self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None) -> Answer:
        data = json.dumps(body).encode() if body is not None else None
        sent = {**(headers or {}), **({"Content-Type": "application/json"} if data else {})}
        started = time.perf_counter()
        connection = http.client.HTTPConnection(self.host, self.port, timeout=60)
        try:
            connection.request(method, self.base + path, body=data, headers=sent)
            reply = connection.getresponse()
            text = reply.read()
        except (ConnectionError, http.client.HTTPException, TimeoutError, OSError) as error:
            return Answer(None, time.perf_counter() - started, error=f"{type(error).__name__}: {error}")
        finally:
            connection.close()
        return Answer(
            reply.status, time.perf_counter() - started, json.loads(text) if text else None, dict(reply.getheaders())
        )


def _submit_until_accepted(api: Api, ready: threading.Barrier) -> list[Answer]:
    key = str(uuid.uuid4())
    body = {"device-ids": ["web-1"], "script-url": SCRIPT}
    ready.wait()
    answers = [api.call("POST", RESOURCE, body, {"Idempotency-Key": key})]
    while _repeated(answers[-1]) and len(answers) < MAX_ATTEMPTS:
        time.sleep(float((answers[-1].headers or {}).get("Retry-After", "1")))
        answers.append(api.call("POST", RESOURCE, body, {"Idempotency-Key": key}))
    return answers


def _repeated(answer: Answer) -> bool:
    return answer.status is None or answer.status in (409, 429) or answer.status >= 500


def _listed(api: Api) -> set[str]:
    ids: set[str] = set()
    token = None
    while True:
        page = api.call("GET", f"{RESOURCE}?limit=100" + (f"&next-token={token}" if token else ""))
        if page.status != 200:
            raise RuntimeError(f"listing the tasks answered {page.status}: {page.body}")
        ids |= {task["id"] for task in page.body["items"]}
        token = page.body.get("next-token")
        if not token:
            return ids


def _summary(answers: list[Answer], wall: float) -> dict[str, Any]:
    seconds = [answer.seconds * 1000 for answer in answers if answer.status is not None]
    return {
        "requests": len(answers),
        "byStatus": dict(sorted(Counter(str(answer.status) for answer in answers).items())),
        "serverErrors": sum(1 for answer in answers if answer.status is not None and answer.status >= 500),
        "connectionsFailed": sum(1 for answer in answers if answer.status is None),
        "failures": sorted({answer.error for answer in answers if answer.error})[:5],
        "wallSeconds": round(wall, 2),
        "throughputPerSecond": round(len(answers) / wall, 1),
        "p50Milliseconds": round(percentile(seconds, 0.5), 1) if seconds else None,
        "p99Milliseconds": round(percentile(seconds, 0.99), 1) if seconds else None,
    }


def run(api: Api, submits: int, polls: int, poll_concurrency: int) -> dict[str, Any]:
    before = _listed(api)
    ready = threading.Barrier(submits)
    started = time.perf_counter()
    with ThreadPoolExecutor(submits) as pool:
        sessions = list(pool.map(lambda _: _submit_until_accepted(api, ready), range(submits)))
    submit_wall = time.perf_counter() - started
    first = [session[0] for session in sessions]
    accepted = [session[-1].body["id"] for session in sessions if session[-1].status == 202]
    made = _listed(api) - before
    task_ids = sorted(set(accepted))

    def poll(index: int) -> Answer:
        return api.call("GET", f"{RESOURCE}/{task_ids[index % len(task_ids)]}")

    started = time.perf_counter()
    with ThreadPoolExecutor(poll_concurrency) as pool:
        polled = list(pool.map(poll, range(polls)))
    poll_wall = time.perf_counter() - started
    return {
        "submits": {
            **_summary(first, submit_wall),
            "note": "the first answer to each of the simultaneous submits; wallSeconds until every one was accepted",
            "repeats": sum(len(session) - 1 for session in sessions),
            "repeatsByStatus": dict(
                sorted(Counter(str(answer.status) for session in sessions for answer in session[1:]).items())
            ),
            "accepted": len(accepted),
            "tasksMade": len(made),
            "duplicateTasks": len(made) - len(set(accepted)),
            "acceptedButNotListed": len(set(accepted) - made),
        },
        "polls": {**_summary(polled, poll_wall), "concurrency": poll_concurrency},
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--submits", type=int, default=200)
    parser.add_argument("--polls", type=int, default=5000)
    parser.add_argument("--poll-concurrency", type=int, default=50)
    parser.add_argument("--api", help="the API's stage URL; default: a local runtime started for the run")
    args = parser.parse_args()
    local = None if args.api else Local.start()
    try:
        api = Api(args.api or local.runtime.api)  # type: ignore[union-attr]
        result = run(api, args.submits, args.polls, args.poll_concurrency)
    finally:
        if local:
            local.stop()
    result["target"] = "zero 5xx, zero connections reset or refused, zero duplicate tasks"
    result["met"] = all(
        (
            result["submits"]["serverErrors"] == 0,
            result["polls"]["serverErrors"] == 0,
            result["submits"]["connectionsFailed"] == 0,
            result["polls"]["connectionsFailed"] == 0,
            result["submits"]["duplicateTasks"] == 0,
            result["submits"]["accepted"] == args.submits,
        )
    )
    save("load", result)


if __name__ == "__main__":
    main()
