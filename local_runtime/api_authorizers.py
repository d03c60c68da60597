"""Lambda authorizers of type TOKEN, as API Gateway runs them in front of a REST API's methods.

- The token is the header the authorizer names (``identitySource``); a request without it, or whose token does not
  match the authorizer's ``identityValidationExpression`` (the whole value), is answered 401 UNAUTHORIZED without
  invoking the function.
- The function is invoked with ``{"type": "TOKEN", "authorizationToken": ..., "methodArn": ...}``, only if its
  resource-based policy lets ``apigateway.amazonaws.com`` invoke it from the API's authorizers
  (``arn:aws:execute-api:<region>:<account>:<api>/authorizers/<id>``).
- A function that fails with the message ``Unauthorized`` answers 401 UNAUTHORIZED; one that fails otherwise, answers
  anything but a principal and a policy, cannot be invoked, or takes longer than ``AUTHORIZER_TIMEOUT_SECONDS``
  answers 500 AUTHORIZER_CONFIGURATION_ERROR.
- The policy is evaluated against the method's ARN as IAM evaluates ``execute-api:Invoke`` (iam.py's statements):
  an explicit Deny answers 403 ACCESS_DENIED "... with an explicit deny", no matching Allow 403 ACCESS_DENIED.
- The result is kept per token for ``authorizerResultTtlInSeconds`` and evaluated again for each method: a policy
  that allows only the first method called denies the others until it expires, as in API Gateway.
- The function's principal and its ``context`` (string, number and boolean values) become
  ``requestContext.authorizer``.

Source: API Gateway Developer Guide, "Use API Gateway Lambda authorizers", "Input to an API Gateway Lambda
authorizer", "Output from an API Gateway Lambda authorizer", "Gateway response types for API Gateway".
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any

from local_runtime import iam
from local_runtime.lambdas import Invocation, LambdaBridge
from local_runtime.template import ACCOUNT_ID, LocalStack, RestApi, TokenAuthorizer

log = logging.getLogger("local_runtime.api")
AUTHORIZER_TIMEOUT_SECONDS = 29
UNAUTHORIZED = "Unauthorized"


@dataclass(frozen=True)
class Refusal:
    """What API Gateway answers instead of the method: a gateway response type and its message."""

    kind: str
    message: str


@dataclass(frozen=True)
class _Result:
    principal_id: str
    statements: tuple[iam.Statement, ...]
    context: dict[str, Any]
    expires: float


class TokenAuthorizers:
    def __init__(self, stack: LocalStack, api: RestApi, lambdas: LambdaBridge) -> None:
        self._stack = stack
        self._api = api
        self._lambdas = lambdas
        self._results: dict[tuple[str, str], _Result] = {}
        self._lock = threading.Lock()
        self._calls = ThreadPoolExecutor(max_workers=8, thread_name_prefix="api-authorizer")

    def authorize(self, authorizer: TokenAuthorizer, method_arn: str, headers: dict[str, list[str]]) -> Any:
        """``requestContext.authorizer`` for a request the authorizer lets through, or the Refusal."""
        token = (headers.get(authorizer.header.lower()) or [""])[-1]
        if not token or (authorizer.validation and not re.fullmatch(authorizer.validation, token)):
            return Refusal("UNAUTHORIZED", UNAUTHORIZED)
        started = time.monotonic()
        result = self._cached(authorizer, token)
        if result is None:
            found = self._invoke(authorizer, token, method_arn)
            if isinstance(found, Refusal):
                return found
            result = found
        decision = _evaluate(result.statements, method_arn)
        if decision == "Deny":
            return Refusal("ACCESS_DENIED", "User is not authorized to access this resource with an explicit deny")
        if decision is None:
            return Refusal("ACCESS_DENIED", "User is not authorized to access this resource")
        latency = int((time.monotonic() - started) * 1000)
        return {**result.context, "principalId": result.principal_id, "integrationLatency": latency}

    def close(self) -> None:
        self._calls.shutdown(wait=False, cancel_futures=True)

    def _cached(self, authorizer: TokenAuthorizer, token: str) -> _Result | None:
        with self._lock:
            result = self._results.get((authorizer.name, token))
        return result if result is not None and result.expires > time.monotonic() else None

    def _invoke(self, authorizer: TokenAuthorizer, token: str, method_arn: str) -> _Result | Refusal:
        function = self._stack.functions[authorizer.function]
        api_arn = f"arn:aws:execute-api:{self._stack.region}:{ACCOUNT_ID}:{self._api.id}"
        authorizer_id = hashlib.sha256(authorizer.name.encode()).hexdigest()[:6]
        if not self._lambdas.permits(
            function.logical_id, "apigateway.amazonaws.com", f"{api_arn}/authorizers/{authorizer_id}"
        ):
            log.warning(
                "authorizer %s: no resource-based permission lets API Gateway invoke %s",
                authorizer.name,
                function.logical_id,
            )
            return Refusal("AUTHORIZER_CONFIGURATION_ERROR", "Internal server error")
        event = {"type": "TOKEN", "authorizationToken": token, "methodArn": method_arn}
        future = self._calls.submit(self._lambdas.invoke, function, event)
        try:
            invocation: Invocation = future.result(timeout=AUTHORIZER_TIMEOUT_SECONDS)
        except FutureTimeout:
            log.warning("authorizer %s: no answer in %d s", authorizer.name, AUTHORIZER_TIMEOUT_SECONDS)
            return Refusal("AUTHORIZER_CONFIGURATION_ERROR", "Internal server error")
        if invocation.error:
            message = invocation.payload.get("errorMessage") if isinstance(invocation.payload, dict) else None
            if message == UNAUTHORIZED:
                return Refusal("UNAUTHORIZED", UNAUTHORIZED)
            log.warning("authorizer %s failed: %s", authorizer.name, message)
            return Refusal("AUTHORIZER_CONFIGURATION_ERROR", "Internal server error")
        result = _result(invocation.payload, time.monotonic() + authorizer.ttl_seconds)
        if result is None:
            log.warning("authorizer %s answered no principal and policy: %.300r", authorizer.name, invocation.payload)
            return Refusal("AUTHORIZER_CONFIGURATION_ERROR", "Internal server error")
        if authorizer.ttl_seconds > 0:
            with self._lock:
                self._results[(authorizer.name, token)] = result
        return result


def _result(payload: Any, expires: float) -> _Result | None:
    """The authorizer's output, if it is one: a principal, a policy, and a context of plain values."""
    if not isinstance(payload, dict) or not isinstance(payload.get("principalId"), str):
        return None
    context = payload.get("context") or {}
    if not isinstance(context, dict) or not all(isinstance(v, str | int | float | bool) for v in context.values()):
        return None
    try:
        statements = iam.statements({"policyDocument": payload["policyDocument"]})
    except (KeyError, TypeError, AttributeError):
        return None
    return _Result(payload["principalId"], statements, context, expires)


def _evaluate(statements: tuple[iam.Statement, ...], method_arn: str) -> str | None:
    """Deny if a Deny statement matches, else Allow if an Allow statement does, else None."""
    matching = {statement.effect for statement in statements if statement.matches("execute-api:Invoke", method_arn)}
    return "Deny" if "Deny" in matching else "Allow" if "Allow" in matching else None
