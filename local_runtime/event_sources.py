"""Lambda's event source mappings, locally: pollers that read a table's stream or a queue for a function and invoke
it, synchronously, with batches of records in the event shapes Lambda gives them.

Each poller runs in the runtime's process and calls the edge with the function's execution role's credentials, so
the role must allow what Lambda's poller does (the managed policies SAM adds for a function's DynamoDB and SQS
events: AWSLambdaDynamoDBExecutionRole, AWSLambdaSQSQueueExecutionRole). A poller the edge refuses (AccessDenied)
logs the refusal and delivers nothing, as AWS would not create, or would stop, such a mapping. A mapping
CreateEventSourceMapping would refuse (a batch size out of range, an invalid filter, ...) stops the runtime.

- A DynamoDB stream (the one !GetAtt Table.StreamArn names, read off DescribeTable as CloudFormation resolves it):
  each shard is read from the starting position, four times a second. Records that match none of the mapping's
  filters are dropped. The rest go to the function in batches of at most BatchSize records and 6 MB, one batch at a
  time per shard, in order (after MaximumBatchingWindowInSeconds, if set, for more records to come). A batch whose
  invocation fails is retried; with BisectBatchOnFunctionError it is split in two first, which uses no retry; with
  ReportBatchItemFailures the function's ``batchItemFailures`` name the record to resume from (the lowest sequence
  number), and an answer that is not a valid report fails the whole batch. After MaximumRetryAttempts retries the
  records are discarded, and the runtime's log says so.
- An SQS queue: messages are received with long polling, up to BatchSize (gathering for the batching window if
  set), with every system attribute (ApproximateReceiveCount...), at most five batches in flight. Messages that
  match no filter are deleted. The messages of a batch that succeeds are deleted; with ReportBatchItemFailures, all
  but the ones the function names (an answer that is not a valid report, or names a message not in the batch, fails
  the whole batch); a failed batch is left in the queue, to be received again once its visibility timeout (as the
  function may have changed it with ChangeMessageVisibility) expires, and moved to the dead-letter queue by SQS past
  the queue's maxReceiveCount. A queue whose visibility timeout is shorter than the function's timeout is refused.

Source: Lambda Developer Guide, "Using AWS Lambda with Amazon DynamoDB" (polling and batching, "Configuring partial
batch response with DynamoDB and Lambda", "Lambda parameters for Amazon DynamoDB event source mappings",
"Retaining discarded records"), "Using Lambda with Amazon SQS" ("Handling errors", "Implementing partial batch
responses", "Lambda parameters for Amazon SQS event source mappings"), "Control which events Lambda sends to your
function"; Lambda API reference, CreateEventSourceMapping.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

import boto3
from botocore.exceptions import BotoCoreError, ClientError
from moto.events.models import EventPattern

from local_runtime.identities import Identities
from local_runtime.lambdas import Invocation, LambdaBridge
from local_runtime.loopback import EdgeTransport, connect
from local_runtime.template import ANY_STREAM_LABEL, EventSourceMapping, Function, LocalStack, queue_url_of

log = logging.getLogger("local_runtime.event_sources")
STREAM_POLL_SECONDS = 0.25
"""Lambda polls each shard of a DynamoDB stream four times a second"""
QUEUE_WAIT_SECONDS = 1
"""How long each ReceiveMessage waits for messages (Lambda long-polls for 20 s; a short wait stops promptly)"""
QUEUE_BATCHES_IN_FLIGHT = 5
"""Batches of one queue invoked at once (Lambda scales its SQS pollers further)"""
PAYLOAD_BYTES = 6 * 1024 * 1024
"""A synchronous invocation's largest payload: a batch is cut short before it"""
MAX_FILTERS = 5
MAX_BATCHING_WINDOW_SECONDS = 300
RETRY_DELAY_SECONDS = (0.25, 5.0)
"""A stream batch's first retry waits the first, each further one twice as long, up to the second"""
REPORT_FAILURES = "ReportBatchItemFailures"


class InvalidMapping(ValueError):
    """A mapping CreateEventSourceMapping refuses (InvalidParameterValueException)."""


def validated_filters(mapping: EventSourceMapping) -> list[EventPattern]:
    """The mapping's filters, once the mapping is checked as CreateEventSourceMapping checks it."""
    name = mapping.logical_id
    unknown = set(mapping.function_response_types) - {REPORT_FAILURES}
    if unknown:
        raise InvalidMapping(f"{name}: FunctionResponseTypes {sorted(unknown)} are not valid")
    if not 0 <= mapping.batching_window_seconds <= MAX_BATCHING_WINDOW_SECONDS:
        raise InvalidMapping(
            f"{name}: MaximumBatchingWindowInSeconds must be between 0 and {MAX_BATCHING_WINDOW_SECONDS}"
        )
    if not 1 <= mapping.batch_size <= 10_000:
        raise InvalidMapping(f"{name}: BatchSize must be between 1 and 10000")
    if mapping.from_queue:
        if mapping.batch_size > 10 and mapping.batching_window_seconds < 1:
            raise InvalidMapping(
                f"{name}: Maximum batch window in seconds must be greater than 0 if maximum batch size is greater"
                " than 10"
            )
        stream_only = [
            parameter
            for parameter, given in (
                ("StartingPosition", mapping.starting_position is not None),
                ("BisectBatchOnFunctionError", mapping.bisect_on_function_error),
                ("MaximumRetryAttempts", mapping.maximum_retry_attempts != -1),
            )
            if given
        ]
        if stream_only:
            raise InvalidMapping(f"{name}: Unsupported {', '.join(stream_only)} for an Amazon SQS event source")
    else:
        if mapping.starting_position not in ("TRIM_HORIZON", "LATEST"):
            raise InvalidMapping(f"{name}: StartingPosition must be TRIM_HORIZON or LATEST for a DynamoDB stream")
        if not -1 <= mapping.maximum_retry_attempts <= 10_000:
            raise InvalidMapping(f"{name}: MaximumRetryAttempts must be between -1 and 10000")
    if len(mapping.filter_patterns) > MAX_FILTERS:
        raise InvalidMapping(f"{name}: at most {MAX_FILTERS} filters (a quota AWS can raise)")
    try:
        return [EventPattern.load(pattern) for pattern in mapping.filter_patterns]
    except Exception as error:  # moto's InvalidEventPatternException and JSON errors alike
        raise InvalidMapping(f"{name}: Invalid filter pattern definition: {error}") from error


class EventSources:
    """Every enabled event source mapping of the stack, a poller thread each."""

    def __init__(
        self,
        stack: LocalStack,
        lambdas: LambdaBridge,
        identities: Identities,
        endpoint_url: str,
        transport: EdgeTransport | None = None,
    ) -> None:
        """``transport``: how the pollers reach the edge from the runtime's process (loopback), if not over HTTP."""
        self._stopping = threading.Event()
        self._pollers: list[_Poller] = []
        for mapping in stack.event_source_mappings:
            filters = validated_filters(mapping)
            if not mapping.enabled:
                continue
            function = stack.functions[mapping.function]
            credentials = identities.for_function(function)
            session = boto3.session.Session(
                aws_access_key_id=credentials.access_key,
                aws_secret_access_key=credentials.secret_key,
                aws_session_token=credentials.session_token,
                region_name=stack.region,
            )
            poller_type = _QueuePoller if mapping.from_queue else _StreamPoller
            self._pollers.append(
                poller_type(
                    mapping, function, filters, lambdas, session, endpoint_url, stack.region, self._stopping, transport
                )
            )
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        for poller in self._pollers:
            thread = threading.Thread(target=poller.run, daemon=True, name=f"poller-{poller.mapping.logical_id}")
            thread.start()
            self._threads.append(thread)

    def close(self) -> None:
        self._stopping.set()
        for thread in self._threads:
            thread.join(timeout=QUEUE_WAIT_SECONDS + 5)


class _Poller(ABC):
    """What both kinds of poller share: the function, its filters, the invocation, and how a refusal ends it."""

    source_kind = ""

    def __init__(
        self,
        mapping: EventSourceMapping,
        function: Function,
        filters: list[EventPattern],
        lambdas: LambdaBridge,
        session: boto3.session.Session,
        endpoint_url: str,
        region: str,
        stopping: threading.Event,
        transport: EdgeTransport | None = None,
    ) -> None:
        self.mapping = mapping
        self._transport = transport
        self._function = function
        self._filters = filters
        self._lambdas = lambdas
        self._session = session
        self._endpoint_url = endpoint_url
        self._region = region
        self._stopping = stopping

    def run(self) -> None:
        """Poll until the runtime stops: a refusal (AccessDenied, or a source Lambda would not accept) ends the
        mapping; any other error is logged and polling resumes from where it was."""
        while not self._stopping.is_set():
            try:
                self._poll()
            except _Refused as refused:
                log.error("%s (%s): %s; nothing is delivered", self.mapping.logical_id, self.source_kind, refused)
                return
            except (ClientError, BotoCoreError) as error:
                refusal = error.response.get("Error", {}) if isinstance(error, ClientError) else {}
                if refusal.get("Code") in ("AccessDenied", "AccessDeniedException"):
                    log.error(
                        "%s: %s; Lambda does not poll a %s for a function whose role may not read it, so nothing"
                        " is delivered",
                        self.mapping.logical_id,
                        refusal.get("Message"),
                        self.source_kind,
                    )
                    return
                log.warning("%s: %s; polling again", self.mapping.logical_id, error)
                self._stopping.wait(1)

    @abstractmethod
    def _poll(self) -> None:
        """Read the source and deliver its records until the runtime stops."""

    def _client(self, service: str) -> Any:
        client = self._session.client(service, endpoint_url=self._endpoint_url)  # type: ignore[call-overload]
        return connect(client, self._transport)

    def _names(self) -> tuple[str, str]:
        return self.mapping.logical_id, self._function.logical_id

    def _matches(self, record: dict[str, Any]) -> bool:
        return not self._filters or any(pattern.matches_event(record) for pattern in self._filters)  # type: ignore[arg-type]

    def _invoke(self, records: list[dict[str, Any]]) -> Invocation:
        try:
            invocation = self._lambdas.invoke(self._function, {"Records": records})
        except (RuntimeError, OSError) as error:  # an execution environment that could not start
            return Invocation({"errorType": type(error).__name__, "errorMessage": str(error)}, "Unhandled")
        if invocation.error is not None:
            payload = invocation.payload if isinstance(invocation.payload, dict) else {}
            log.warning(
                "%s: %s failed on a batch of %d (%s: %s)",
                *self._names(),
                len(records),
                payload.get("errorType"),
                payload.get("errorMessage"),
            )
        return invocation

    def _reported_failures(self, invocation: Invocation, identifiers: list[str]) -> set[str] | None:
        """The items a successful invocation reports as failed (none unless the mapping has ReportBatchItemFailures);
        None for an answer that is not a valid report, which fails the whole batch."""
        answer = invocation.payload
        if REPORT_FAILURES not in self.mapping.function_response_types or answer is None:
            return set()
        if not isinstance(answer, dict):
            return None
        failures = answer.get("batchItemFailures")
        if failures is None:
            return set()
        if not isinstance(failures, list):
            return None
        reported = set()
        for failure in failures:
            identifier = failure.get("itemIdentifier") if isinstance(failure, dict) else None
            if not isinstance(identifier, str) or identifier not in identifiers:
                return None
            reported.add(identifier)
        return reported


class _Refused(Exception):
    """The source is one Lambda refuses to poll (the message says why, as CreateEventSourceMapping would)."""


class _StreamPoller(_Poller):
    source_kind = "DynamoDB stream"

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self._checkpoints: dict[str, str] = {}
        """shard id -> sequence number of the last record done with (delivered, discarded or filtered out)"""

    def _poll(self) -> None:
        streams = self._client("dynamodbstreams")
        stream_arn = self._stream_arn()
        shards = streams.describe_stream(StreamArn=stream_arn)["StreamDescription"]["Shards"]
        iterators: dict[str, str | None] = {
            shard["ShardId"]: self._iterator(streams, stream_arn, shard["ShardId"]) for shard in shards
        }
        pending: dict[str, list[dict[str, Any]]] = {shard: [] for shard in iterators}
        waiting_since: dict[str, float] = {}
        while not self._stopping.is_set():
            polled = time.monotonic()
            for shard, iterator in list(iterators.items()):
                if iterator is None:  # a closed shard, read to its end
                    continue
                answer = streams.get_records(ShardIterator=iterator, Limit=1000)
                iterators[shard] = answer.get("NextShardIterator")
                records = [_lambda_json(record) | {"eventSourceARN": stream_arn} for record in answer["Records"]]
                pending[shard] += [record for record in records if self._matches(record)]
                if records and not pending[shard]:
                    self._checkpoints[shard] = records[-1]["dynamodb"]["SequenceNumber"]
                if pending[shard]:
                    waiting_since.setdefault(shard, time.monotonic())
                    full = len(pending[shard]) >= self.mapping.batch_size
                    if full or time.monotonic() - waiting_since[shard] >= self.mapping.batching_window_seconds:
                        for batch in _batches(pending[shard], self.mapping.batch_size):
                            self._deliver(shard, batch)
                        pending[shard] = []
                        del waiting_since[shard]
            # four polls a second, counted from the start of each (an invocation's time is part of the wait)
            self._stopping.wait(max(0.0, STREAM_POLL_SECONDS - (time.monotonic() - polled)))

    def _stream_arn(self) -> str:
        """The stream's ARN: the one the mapping names, or the table's latest when the template could only name the
        table's stream before the table existed (read as CloudFormation resolves !GetAtt, by the deployer)."""
        if not self.mapping.source_arn.endswith(f"/stream/{ANY_STREAM_LABEL}"):
            return self.mapping.source_arn
        table = self.mapping.source_arn.split(":table/", 1)[1].split("/", 1)[0]
        deployer = boto3.session.Session().client("dynamodb", endpoint_url=self._endpoint_url, region_name=self._region)
        description = deployer.describe_table(TableName=table)["Table"]
        if "LatestStreamArn" not in description:
            raise _Refused(f"table {table} has no stream: the template's !GetAtt {table}.StreamArn does not resolve")
        return str(description["LatestStreamArn"])

    def _iterator(self, streams: Any, stream_arn: str, shard: str) -> str:
        """From the shard's checkpoint if it has one (polling resumed after an error), else the starting position."""
        if shard in self._checkpoints:
            position = {"ShardIteratorType": "AFTER_SEQUENCE_NUMBER", "SequenceNumber": self._checkpoints[shard]}
        else:
            position = {"ShardIteratorType": str(self.mapping.starting_position)}
        return str(streams.get_shard_iterator(StreamArn=stream_arn, ShardId=shard, **position)["ShardIterator"])

    def _deliver(self, shard: str, records: list[dict[str, Any]]) -> None:
        """One batch, until it succeeds or its records are discarded: retried, bisected, resumed from the first
        record the function reports."""
        work = [(records, 0)]  # (batch, retries so far), in stream order
        while work and not self._stopping.is_set():
            batch, retries = work.pop(0)
            invocation = self._invoke(batch)
            numbers = [record["dynamodb"]["SequenceNumber"] for record in batch]
            failed = None if invocation.error is not None else self._reported_failures(invocation, numbers)
            if failed == set():
                self._checkpoints[shard] = numbers[-1]
                continue
            if failed is None and self.mapping.bisect_on_function_error and len(batch) > 1:
                half = len(batch) // 2
                work[:0] = [(batch[:half], retries), (batch[half:], retries)]
                continue
            resume = 0 if failed is None else min(numbers.index(number) for number in failed)
            if failed is not None:
                log.info("%s: %s reported failures; resuming from %s", *self._names(), numbers[resume])
            if resume:
                self._checkpoints[shard] = numbers[resume - 1]
            remaining = batch[resume:]
            if 0 <= self.mapping.maximum_retry_attempts <= retries:
                log.error(
                    "%s: %d records discarded after %d retries (sequence numbers %s to %s)",
                    self.mapping.logical_id,
                    len(remaining),
                    retries,
                    numbers[resume],
                    numbers[-1],
                )
                self._checkpoints[shard] = numbers[-1]
                continue
            work.insert(0, (remaining, retries + 1))
            low, high = RETRY_DELAY_SECONDS
            self._stopping.wait(min(low * 2**retries, high))


class _QueuePoller(_Poller):
    source_kind = "SQS queue"

    def _poll(self) -> None:
        sqs = self._client("sqs")
        region = self.mapping.source_arn.split(":")[3]
        queue_url = queue_url_of(self.mapping.source_arn, self._endpoint_url)
        attributes = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["VisibilityTimeout"])
        visibility = int(attributes["Attributes"]["VisibilityTimeout"])
        if visibility < self._function.timeout:
            raise _Refused(
                f"Queue visibility timeout: {visibility} seconds is less than Function timeout:"
                f" {self._function.timeout} seconds"
            )
        in_flight = threading.BoundedSemaphore(QUEUE_BATCHES_IN_FLIGHT)
        while not self._stopping.is_set():
            if not in_flight.acquire(timeout=QUEUE_WAIT_SECONDS):
                continue
            try:
                messages = self._receive(sqs, queue_url)
            except BaseException:
                in_flight.release()
                raise
            if not messages or self._stopping.is_set():
                in_flight.release()
                continue
            records = [_queue_record(message, self.mapping.source_arn, region) for message in messages]
            threading.Thread(
                target=self._deliver, args=(sqs, queue_url, records, in_flight.release), daemon=True
            ).start()

    def _receive(self, sqs: Any, queue_url: str) -> list[dict[str, Any]]:
        """Up to BatchSize messages: as soon as there are some, or once the batching window has passed."""
        messages: list[dict[str, Any]] = []
        deadline = time.monotonic() + self.mapping.batching_window_seconds
        while not self._stopping.is_set() and len(messages) < self.mapping.batch_size:
            messages += sqs.receive_message(
                QueueUrl=queue_url,
                MaxNumberOfMessages=min(10, self.mapping.batch_size - len(messages)),
                WaitTimeSeconds=QUEUE_WAIT_SECONDS,
                MessageSystemAttributeNames=["All"],
                MessageAttributeNames=["All"],
            ).get("Messages", [])
            if messages and time.monotonic() >= deadline:
                break
        return messages

    def _deliver(self, sqs: Any, queue_url: str, records: list[dict[str, Any]], done: Callable[[], None]) -> None:
        try:
            matching: list[dict[str, Any]] = []
            unmatched: list[dict[str, Any]] = []
            for record in records:
                (matching if self._matches(_filtered_view(record)) else unmatched).append(record)
            self._delete(sqs, queue_url, unmatched)  # Lambda deletes the messages its filters drop
            for batch in _batches(matching, self.mapping.batch_size):
                invocation = self._invoke(batch)
                identifiers = [record["messageId"] for record in batch]
                failed = None if invocation.error is not None else self._reported_failures(invocation, identifiers)
                kept = set(identifiers) if failed is None else failed
                if failed:
                    log.info(
                        "%s: %s reported %d of %d failed; left in the queue", *self._names(), len(kept), len(batch)
                    )
                self._delete(sqs, queue_url, [record for record in batch if record["messageId"] not in kept])
        except (ClientError, BotoCoreError) as error:
            log.error("%s: %s", self.mapping.logical_id, error)
        finally:
            done()

    def _delete(self, sqs: Any, queue_url: str, records: list[dict[str, Any]]) -> None:
        for start in range(0, len(records), 10):
            entries = [
                {"Id": str(position), "ReceiptHandle": record["receiptHandle"]}
                for position, record in enumerate(records[start : start + 10])
            ]
            for failure in sqs.delete_message_batch(QueueUrl=queue_url, Entries=entries).get("Failed", []):
                log.warning("%s: a processed message was not deleted: %s", self.mapping.logical_id, failure)


def _batches(records: list[dict[str, Any]], size: int) -> Iterable[list[dict[str, Any]]]:
    """Consecutive batches of at most ``size`` records whose event stays under the invocation payload limit."""
    batch: list[dict[str, Any]] = []
    payload = len('{"Records": []}')
    for record in records:
        record_bytes = len(json.dumps(record)) + 2
        if batch and (len(batch) == size or payload + record_bytes > PAYLOAD_BYTES):
            yield batch
            batch, payload = [], len('{"Records": []}')
        batch.append(record)
        payload += record_bytes
    if batch:
        yield batch


def _lambda_json(value: Any) -> Any:
    """A record as boto3 parsed it, back in the JSON Lambda sends: binary as base64, times in epoch seconds."""
    if isinstance(value, dict):
        return {key: _lambda_json(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_lambda_json(item) for item in value]
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    if isinstance(value, datetime):
        return int(value.timestamp())
    return value


def _queue_record(message: dict[str, Any], queue_arn: str, region: str) -> dict[str, Any]:
    """An SQS message as Lambda's SQS event carries it."""
    record = {
        "messageId": message["MessageId"],
        "receiptHandle": message["ReceiptHandle"],
        "body": message["Body"],
        "attributes": message.get("Attributes", {}),
        "messageAttributes": {
            name: _message_attribute(value) for name, value in message.get("MessageAttributes", {}).items()
        },
        "md5OfBody": message["MD5OfBody"],
        "eventSource": "aws:sqs",
        "eventSourceARN": queue_arn,
        "awsRegion": region,
    }
    if "MD5OfMessageAttributes" in message:
        record["md5OfMessageAttributes"] = message["MD5OfMessageAttributes"]
    return record


def _message_attribute(value: dict[str, Any]) -> dict[str, Any]:
    shaped = {
        "stringListValues": value.get("StringListValues", []),
        "binaryListValues": [base64.b64encode(item).decode() for item in value.get("BinaryListValues", [])],
        "dataType": value["DataType"],
    }
    if "StringValue" in value:
        shaped["stringValue"] = value["StringValue"]
    if "BinaryValue" in value:
        shaped["binaryValue"] = base64.b64encode(value["BinaryValue"]).decode()
    return shaped


def _filtered_view(record: dict[str, Any]) -> dict[str, Any]:
    """What a filter sees of an SQS record: its body as JSON when it is JSON, as a string otherwise."""
    try:
        body = json.loads(record["body"])
    except ValueError:
        return record
    return record | {"body": body}
