"""Exactly one result per ``Idempotency-Key``: Powertools' idempotency utility, with its records in the idempotency
table (``IDEMPOTENCY_TABLE``).

A key belongs to its caller: the record is found by a hash of the caller's owner key and the key, so two callers may
use the same key. The record also keeps a hash of the request, and the same key with another request is refused
(``IdempotencyValidationError``). While the first request runs, a repeat is refused as in progress
(``IdempotencyAlreadyInProgressError``) until the first request's function would have timed out; when the first
request fails, the utility deletes the record, so a retry with the same key runs again. A finished request's answer is
kept for ``EXPIRES_AFTER_SECONDS`` and given again to each repeat.

The record alone cannot make a request run once: a function can time out after making its resource and before its
record is marked done, or that last write can fail, and a repeat then runs again once the record's time in progress
is over. So the id of what a request makes is fixed by its key: the run is handed the ids it may use (``made_ids``),
made from the caller, the key and the request, and finds what an earlier run under the same key made instead of
making another. Only a resource made more than the key's window ago (``within_window``) is not the key's any more:
the run moves to the next id then."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from functools import cache
from typing import TYPE_CHECKING, Any, TypeVar

from aws_lambda_powertools import Logger

from longrun.config import settings
from longrun.errors import IdempotencyKeyInProgress, IdempotencyKeyReused, IdempotencyUnavailable
from longrun.store import retry_conflicts, utc_now

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.idempotency import DynamoDBPersistenceLayer, IdempotencyConfig
    from aws_lambda_powertools.utilities.typing import LambdaContext

EXPIRES_AFTER_SECONDS = 24 * 3600
KEY_PATTERN = r"^[\x21-\x7e]{1,255}$"
"""An Idempotency-Key: 1 to 255 visible ASCII characters (a UUID is the usual choice)"""

MADE_ID_NAMESPACE = uuid.UUID("6f1d3c52-8a41-4c1e-9d55-2f7b0e6a9c13")
MAX_GENERATIONS = 100
"""How many ids one key and request may go through, one per window (``made_ids``)"""

logger = Logger(child=True)
Answer = TypeVar("Answer")
_invocation: dict[str, LambdaContext] = {}
"""The API function's current invocation (``register``)"""


@cache
def _config() -> IdempotencyConfig:
    from aws_lambda_powertools.utilities.idempotency import IdempotencyConfig  # only a request with a key pays for it

    return IdempotencyConfig(
        event_key_jmespath="[caller, key]",
        payload_validation_jmespath="request",
        raise_on_no_idempotency_key=True,
        expires_after_seconds=EXPIRES_AFTER_SECONDS,
    )


@cache
def _persistence() -> DynamoDBPersistenceLayer:
    """Powertools' DynamoDB persistence layer, with each write made again while DynamoDB refuses it as conflicting
    with a transaction (TransactionConflictException, which the SDKs do not retry). Without that, a refused
    completion would leave the record in progress, and every repeat refused, until its time in progress ran out."""
    from aws_lambda_powertools.utilities.idempotency import DynamoDBPersistenceLayer
    from aws_lambda_powertools.utilities.idempotency.persistence.datarecord import DataRecord

    class ConflictRetryingPersistenceLayer(DynamoDBPersistenceLayer):
        def _put_record(self, data_record: DataRecord) -> None:
            retry_conflicts(lambda: super(ConflictRetryingPersistenceLayer, self)._put_record(data_record))

        def _update_record(self, data_record: DataRecord) -> None:
            retry_conflicts(lambda: super(ConflictRetryingPersistenceLayer, self)._update_record(data_record))

        def _delete_record(self, data_record: DataRecord) -> None:
            retry_conflicts(lambda: super(ConflictRetryingPersistenceLayer, self)._delete_record(data_record))

    table = settings().idempotency_table
    if not table:
        raise RuntimeError("this function is not configured with IDEMPOTENCY_TABLE")
    return ConflictRetryingPersistenceLayer(table_name=table)


def register(context: LambdaContext) -> None:
    """The invocation under way: how long it may still run tells the utility when a request in progress is taken as
    lost, so that a repeat may run it again."""
    _invocation["context"] = context


def made_ids(action: str, caller: str, key: str, request: dict[str, Any]) -> Iterator[str]:
    """The ids a request made under ``key`` may give what it makes, in the order to try them: the same for every
    repeat of the request, another list for another caller, key or request."""
    seed = hashlib.sha256(json.dumps([action, caller, key, request], sort_keys=True).encode()).hexdigest()
    for generation in range(MAX_GENERATIONS):
        yield str(uuid.uuid5(MADE_ID_NAMESPACE, f"{seed}/{generation}"))


def within_window(made_at: datetime) -> bool:
    """Whether a resource made under a key was made inside the key's window: a repeat answers it; one older belongs
    to an earlier use of the key, whose record has expired."""
    return utc_now() - made_at < timedelta(seconds=EXPIRES_AFTER_SECONDS)


def once(
    action: str,
    caller: str,
    key: str,
    request: dict[str, Any],
    run: Callable[[Iterator[str]], Answer],
    kept: Callable[[Answer], dict[str, Any]],
    replayed: Callable[[dict[str, Any]], Answer],
) -> Answer:
    """``run(ids)``'s answer, computed once for this caller, ``action`` and key; ``request`` (the request as checked,
    as JSON) is what a repeat must match. ``run`` gives what it makes the first of ``ids`` that no earlier run under
    this key made more than the window ago, and answers what an earlier run made under it if there is one. The record
    keeps ``kept(answer)``, and a repeat answers ``replayed`` of it."""
    from aws_lambda_powertools.utilities.idempotency import idempotent_function
    from aws_lambda_powertools.utilities.idempotency.exceptions import (
        IdempotencyAlreadyInProgressError,
        IdempotencyInconsistentStateError,
        IdempotencyPersistenceLayerError,
        IdempotencyValidationError,
    )
    from aws_lambda_powertools.utilities.idempotency.serialization.custom_dict import CustomDictSerializer

    made: list[Answer] = []

    def accepted(data: dict[str, Any]) -> Answer:
        made.append(run(made_ids(action, caller, key, request)))
        return made[-1]

    config = _config()
    if "context" in _invocation:
        config.register_lambda_context(_invocation["context"])
    guarded = idempotent_function(
        accepted,
        data_keyword_argument="data",
        persistence_store=_persistence(),
        config=config,
        output_serializer=CustomDictSerializer(to_dict=kept, from_dict=replayed),
        key_prefix=action,
    )
    try:
        found: Answer = guarded(data={"caller": caller, "key": key, "request": request})
    except IdempotencyValidationError as error:
        raise IdempotencyKeyReused(
            "this Idempotency-Key was first used with another request; use a new key for a new request"
        ) from error
    except IdempotencyAlreadyInProgressError as error:
        raise IdempotencyKeyInProgress(
            "the first request with this Idempotency-Key has not finished; repeat it after Retry-After"
        ) from error
    except (IdempotencyPersistenceLayerError, IdempotencyInconsistentStateError) as error:
        if made:  # made, but its record is left in progress: a repeat once that has run out finds the same
            logger.warning("idempotency record not marked done", extra={"error": repr(error.__cause__ or error)})
            return made[0]
        logger.warning("idempotency record unavailable", extra={"error": repr(error.__cause__ or error)})
        raise IdempotencyUnavailable("the Idempotency-Key's record could not be read or written; retry") from error
    return found
