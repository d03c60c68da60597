"""moto's hot paths, made cheaper behind the same API: what moto answers is unchanged, byte for byte, but for one
artifact of moto's that DynamoDB does not have (a query's page ended on the size of an item outside its sort key
condition: see ``_key_condition_run``).

- Finding the backend of a request: moto lists its package's directory (``os.listdir`` and a ``stat`` per service,
  about 200) and then tries every service's URL patterns, for every request, under one lock. The answer depends on
  the host name only, so it is kept per host name.
- Serializing DynamoDB's answers: moto's generic serializer looks up each of the ten members of every attribute
  value of every item (S, N, B, SS, ... through five kinds of alias), which makes a Query of 100 items cost tens of
  milliseconds. An attribute value made only of strings, numbers, booleans, string and number sets, lists and maps
  serializes to itself, so it is written as it is; anything else (binary values, an unexpected key or type) goes
  through moto's serializer as before.
- Comparing and sizing DynamoDB values: a Query reads every item of the table, comparing its key with the one asked
  for, then sorts and sizes what it found; each comparison goes through ``cast_value``, which tests the value's type
  five times before answering a string with itself. A string's (and a binary's) ``cast_value`` and ``size`` are
  answered at once, with the same result.
- Querying a table (not an index) by its partition key: moto lists and sorts every item of the table, then keeps
  those of the partition. The table keeps its items by partition already, so the query reads only that partition:
  the same items, in the same order. With a sort key condition, moto then sizes every item of the partition before
  testing the condition (a task's 10,000 device records for each batch's range); the query goes through the items
  that meet it and the one after, as ``_key_condition_run`` says.
- Starting an execution: moto parses the state machine's definition with ANTLR for every execution (and when a
  state machine is created), a seventh of the runtime's time in a burst of submits. The parse
  tree of a definition that parsed without errors is kept per definition text, and the evaluation components are
  built from it afresh for each execution, as before; a definition with syntax errors is parsed (and refused) again.
- Evaluating a JSONPath: jsonpath-ng builds its parser (reading its LR tables) for every path it parses, and moto
  parses the path of every InputPath, Parameters binding, ResultPath and OutputPath each time a state runs. A parsed
  path is kept per path text (they are immutable once parsed).
- SQS: moto checks each received message's retention, and each sent message's queue for content-based
  deduplication, by building all of the queue's attributes, which counts the queue's messages three ways, to read
  one of them. The retention is read alone, and a message being sent skips the counts (send_message reads none of
  them). A message's visibility and delay compare the time now with moto's own clock, taken as seconds since the
  epoch (``time.time()``) instead of through a naive UTC datetime subtracted from another (the same number).
- Finding an account's backend: moto takes one process-wide lock for every lookup of an account's backends, to
  make the account's on first use; an account that exists is answered without it.
"""

from __future__ import annotations

import functools
import inspect
import threading
import time
from typing import Any

import jsonpath_ng
import jsonpath_ng.ext
from moto.core.base_backend import AccountSpecificBackend, BackendDict
from moto.core.serialize import BaseJSONSerializer
from moto.dynamodb.models.dynamo_type import DynamoType
from moto.dynamodb.models.table import Table
from moto.dynamodb.models.utilities import bytesize
from moto.moto_server.werkzeug_app import DomainDispatcherApplication
from moto.sqs import models as sqs_models
from moto.sqs.models import Message, Queue, SQSBackend
from moto.stepfunctions.parser.asl.component.common.path import result_path
from moto.stepfunctions.parser.asl.component.eval_component import EvalComponent
from moto.stepfunctions.parser.asl.parse import asl_parser
from moto.stepfunctions.parser.asl.parse.preprocessor import Preprocessor
from moto.stepfunctions.parser.asl.utils import json_path

_MISSING = object()
_SCALARS = {"S": str, "N": str, "BOOL": bool, "NULL": bool}
_SETS = ("SS", "NS")


def plain_attribute_value(value: Any) -> bool:
    """Whether a DynamoDB attribute value (as moto's answer holds it) is one moto's serializer copies unchanged:
    one key, a string, number, boolean, null, string or number set, or a list or map of such values."""
    if type(value) is not dict or len(value) != 1:
        return False
    ((kind, inner),) = value.items()
    expected = _SCALARS.get(kind)
    if expected is not None:
        return type(inner) is expected
    if kind in _SETS:
        return type(inner) is list and all(type(member) is str for member in inner)
    if kind == "M":
        return type(inner) is dict and all(
            type(name) is str and plain_attribute_value(member) for name, member in inner.items()
        )
    if kind == "L":
        return type(inner) is list and all(plain_attribute_value(member) for member in inner)
    return False


def install() -> None:
    """Patch moto for this whole process (idempotent)."""
    if getattr(DomainDispatcherApplication.get_backend_for_host, "_cached", False):
        return
    _cache_backend_for_host()
    _serialize_plain_attribute_values()
    _compare_strings_at_once()
    _query_one_partition()
    _parse_each_definition_once()
    _parse_each_json_path_once()
    _read_retention_alone()
    _send_without_counting()
    _read_the_clock_as_seconds()
    _find_existing_accounts_without_the_lock()


def _cache_backend_for_host() -> None:
    original = DomainDispatcherApplication.get_backend_for_host

    @functools.wraps(original)
    def get_backend_for_host(self: DomainDispatcherApplication, host: str | None) -> Any:
        cache: dict[str | None, Any] = self.__dict__.setdefault("_local_backend_for_host", {})
        backend = cache.get(host, _MISSING)
        if backend is _MISSING:
            backend = cache[host] = original(self, host)
        return backend

    get_backend_for_host._cached = True  # type: ignore[attr-defined]
    DomainDispatcherApplication.get_backend_for_host = get_backend_for_host  # type: ignore[method-assign]


def _serialize_plain_attribute_values() -> None:
    original = BaseJSONSerializer._serialize_type_structure

    @functools.wraps(original)
    def _serialize_type_structure(self: BaseJSONSerializer, serialized: Any, value: Any, shape: Any, key: str) -> None:
        if key and shape.name == "AttributeValue" and plain_attribute_value(value):
            self._default_serialize(serialized, value, shape, key)
            return
        original(self, serialized, value, shape, key)

    BaseJSONSerializer._serialize_type_structure = _serialize_type_structure  # type: ignore[method-assign]


_AS_IS = frozenset({"S", "B"})
"""Types whose cast_value is the value itself, and whose size is its length in bytes (moto's own rules)"""


def _compare_strings_at_once() -> None:
    cast_value: Any = DynamoType.cast_value
    size = DynamoType.size
    original_cast = cast_value.fget

    def fast_cast_value(self: DynamoType) -> Any:
        if self.type in _AS_IS:
            return self.value
        return original_cast(self)

    @functools.wraps(size)
    def fast_size(self: DynamoType) -> int:
        if self.type in _AS_IS and isinstance(self.value, str | bytes):
            return bytesize(self.value)  # type: ignore[arg-type]
        return size(self)

    fast_cast_value.__wrapped__ = original_cast  # type: ignore[attr-defined]
    DynamoType.cast_value = property(fast_cast_value)  # type: ignore[method-assign,assignment]
    DynamoType.size = fast_size  # type: ignore[method-assign]


_partition = threading.local()
"""The table a query in this thread reads, and the items of the partition it reads"""


def _query_one_partition() -> None:
    all_items = Table.all_items
    query = Table.query
    signature = inspect.signature(query)

    @functools.wraps(all_items)
    def partition_items(self: Table) -> list[Any]:
        table, items = getattr(_partition, "only", (None, []))
        if table is self:
            return list(items)
        return all_items(self)

    @functools.wraps(query)
    def query_partition(self: Table, hash_key: Any, *args: Any, **kwargs: Any) -> Any:
        arguments = signature.bind(self, hash_key, *args, **kwargs).arguments
        if arguments.get("index_name") or not self.range_key_attr or hash_key is None:
            return query(self, hash_key, *args, **kwargs)
        partition = self.items.get(hash_key, {}).values()
        items = sorted(partition, key=lambda item: item.range_key.cast_value)  # as DynamoType.__lt__ orders them
        if arguments.get("range_comparison") and not arguments.get("filter_kwargs"):
            items = _key_condition_run(
                items, arguments["range_comparison"], arguments["range_objs"], arguments["scan_index_forward"]
            )
        _partition.only = (self, items)
        try:
            return query(self, hash_key, *args, **kwargs)
        finally:
            _partition.only = (None, [])

    Table.all_items = partition_items  # type: ignore[method-assign]
    Table.query = query_partition  # type: ignore[method-assign]


def _key_condition_run(items: list[Any], comparison: str, values: list[Any], forward: bool | None) -> list[Any]:
    """Of a partition's items sorted by their sort key, those moto's query goes through to answer a sort key
    condition: from the first that meets it to the last, and the one after (moto ends a page that reached its Limit
    there). Before the first, moto only sizes each item against the 1 MB page with nothing read yet, which no item
    fills; after the one after, it sizes each against what it has read, and could end the page on an item outside
    the condition, one DynamoDB never reads."""
    ordered = items if forward is not False else items[::-1]
    meeting = [at for at, item in enumerate(ordered) if item.range_key.compare(comparison, values)]
    return ordered[meeting[0] : meeting[-1] + 2] if meeting else []


_PARSE_TREES: dict[str, Any] = {}
"""Definition text -> its ANTLR parse tree, for definitions that parsed without errors"""


def _parse_each_definition_once() -> None:
    parser_class = asl_parser.AmazonStateLanguageParser
    original = parser_class.parse

    def parse(definition: str) -> tuple[EvalComponent, Any]:
        tree = _PARSE_TREES.get(definition)
        if tree is None:
            program, tree = original(definition)  # raises ASLParserException on syntax errors
            _PARSE_TREES[definition] = tree
            return program, tree
        return Preprocessor().visit(tree), tree

    parse.__wrapped__ = original  # type: ignore[attr-defined]
    parser_class.parse = staticmethod(parse)  # type: ignore[method-assign]


def _parse_each_json_path_once() -> None:
    json_path.parse = functools.lru_cache(maxsize=4096)(jsonpath_ng.ext.parse)  # type: ignore[attr-defined]
    result_path.parse = functools.lru_cache(maxsize=4096)(jsonpath_ng.parse)  # type: ignore[attr-defined]


def _read_retention_alone() -> None:
    original = SQSBackend.is_message_valid_based_on_retention_period

    @functools.wraps(original)
    def is_message_valid_based_on_retention_period(self: SQSBackend, queue_name: str, message: Message) -> bool:
        retention_period: int = self.get_queue(queue_name).message_retention_period  # type: ignore[attr-defined]
        return bool(retention_period + message.sent_timestamp / 1000 > time.time())  # type: ignore[operator]

    SQSBackend.is_message_valid_based_on_retention_period = (  # type: ignore[method-assign]
        is_message_valid_based_on_retention_period
    )


_sending = threading.local()
"""The queue a send_message in this thread adds to"""
_COUNTS = (
    "approximate_number_of_messages",
    "approximate_number_of_messages_delayed",
    "approximate_number_of_messages_not_visible",
)


def _send_without_counting() -> None:
    for name in _COUNTS:
        count = getattr(Queue, name).fget

        def skipped_while_sending(self: Queue, count: Any = count) -> int:
            if getattr(_sending, "queue", None) is self:
                return 0  # send_message builds the queue's attributes for one that is not a count
            return int(count(self))

        skipped_while_sending.__wrapped__ = count  # type: ignore[attr-defined]
        setattr(Queue, name, property(skipped_while_sending))
    send_message = SQSBackend.send_message

    @functools.wraps(send_message)
    def send_message_uncounted(self: SQSBackend, queue_name: str, *args: Any, **kwargs: Any) -> Message:
        _sending.queue = self.queues.get(queue_name)
        try:
            return send_message(self, queue_name, *args, **kwargs)
        finally:
            _sending.queue = None

    SQSBackend.send_message = send_message_uncounted  # type: ignore[method-assign]


def _read_the_clock_as_seconds() -> None:
    unix_time_millis = sqs_models.unix_time_millis  # type: ignore[attr-defined]

    @functools.wraps(unix_time_millis)
    def now_millis(dt: Any = None) -> float:
        return time.time() * 1000.0 if dt is None else unix_time_millis(dt)

    sqs_models.unix_time_millis = now_millis  # type: ignore[attr-defined]


def _find_existing_accounts_without_the_lock() -> None:
    getitem = BackendDict.__getitem__

    @functools.wraps(getitem)
    def account_backend(self: BackendDict[Any], account_id: str) -> AccountSpecificBackend[Any]:
        backend = dict.get(self, account_id)
        return backend if backend is not None else getitem(self, account_id)

    BackendDict.__getitem__ = account_backend  # type: ignore[method-assign]
