"""Exactly one result per ``Idempotency-Key``: Powertools' idempotency utility, with its records in the idempotency
table (``IDEMPOTENCY_TABLE``).

A key belongs to its caller: the record is found by a hash of the caller's owner key and the key, so two callers may
use the same key. The record also keeps a hash of the request, and the same key with another request is refused
(``IdempotencyValidationError``). While the first request runs, a repeat is refused as in progress
(``IdempotencyAlreadyInProgressError``) until the first request's function would have timed out; when the first
request fails, the utility deletes the record, so a retry with the same key runs again. A finished request's answer is
kept for ``EXPIRES_AFTER_SECONDS`` and given again to each repeat."""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import TYPE_CHECKING, Any, TypeVar

from aws_lambda_powertools import Logger
from pydantic import BaseModel

from longrun.config import settings
from longrun.errors import IdempotencyKeyInProgress, IdempotencyKeyReused, IdempotencyUnavailable

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.idempotency import DynamoDBPersistenceLayer, IdempotencyConfig
    from aws_lambda_powertools.utilities.typing import LambdaContext

EXPIRES_AFTER_SECONDS = 24 * 3600
KEY_PATTERN = r"^[\x21-\x7e]{1,255}$"
"""An Idempotency-Key: 1 to 255 visible ASCII characters (a UUID is the usual choice)"""

logger = Logger(child=True)
Answer = TypeVar("Answer", bound=BaseModel)
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
    from aws_lambda_powertools.utilities.idempotency import DynamoDBPersistenceLayer

    table = settings().idempotency_table
    if not table:
        raise RuntimeError("this function is not configured with IDEMPOTENCY_TABLE")
    return DynamoDBPersistenceLayer(table_name=table)


def register(context: LambdaContext) -> None:
    """The invocation under way: how long it may still run tells the utility when a request in progress is taken as
    lost, so that a repeat may run it again."""
    _invocation["context"] = context


def once(
    action: str, caller: str, key: str, request: BaseModel, answer: type[Answer], run: Callable[[], Answer]
) -> Answer:
    """``run()``'s answer, computed once for this caller, ``action`` and key; ``request`` (as validated) is what a
    repeat must match."""
    from aws_lambda_powertools.utilities.idempotency import idempotent_function
    from aws_lambda_powertools.utilities.idempotency.exceptions import (
        IdempotencyAlreadyInProgressError,
        IdempotencyInconsistentStateError,
        IdempotencyPersistenceLayerError,
        IdempotencyValidationError,
    )
    from aws_lambda_powertools.utilities.idempotency.serialization.pydantic import PydanticSerializer

    def accepted(data: dict[str, Any]) -> Answer:
        return run()

    config = _config()
    if "context" in _invocation:
        config.register_lambda_context(_invocation["context"])
    guarded = idempotent_function(
        accepted,
        data_keyword_argument="data",
        persistence_store=_persistence(),
        config=config,
        output_serializer=PydanticSerializer(answer),
        key_prefix=action,
    )
    body = request.model_dump(mode="json", by_alias=True)
    try:
        found: Answer = guarded(data={"caller": caller, "key": key, "request": body})
    except IdempotencyValidationError as error:
        raise IdempotencyKeyReused(
            "this Idempotency-Key was first used with another request; use a new key for a new request"
        ) from error
    except IdempotencyAlreadyInProgressError as error:
        raise IdempotencyKeyInProgress(
            "the first request with this Idempotency-Key has not finished; repeat it after Retry-After"
        ) from error
    except (IdempotencyPersistenceLayerError, IdempotencyInconsistentStateError) as error:
        logger.warning("idempotency record unavailable", extra={"error": repr(error.__cause__ or error)})
        raise IdempotencyUnavailable("the Idempotency-Key's record could not be read or written; retry") from error
    return found
