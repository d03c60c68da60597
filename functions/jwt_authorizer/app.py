"""The REST API's Lambda authorizer (ApiAuthorizer JWT): a bearer token in, the caller's policy out."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.typing import LambdaContext

from longrun import cold_start
from longrun.bearer_tokens import InvalidToken, IssuerUnavailable, verify
from longrun.config import settings

logger = Logger()
UNAUTHORIZED = "Unauthorized"
"""The error message by which API Gateway answers 401 (any other error is its 500)"""


@logger.inject_lambda_context
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    token = event["authorizationToken"].removeprefix("Bearer ")
    try:
        bearer = verify(token, settings().jwt_issuer, settings().jwt_audience)
    except InvalidToken as refused:
        logger.info("bearer token refused", extra={"reason": str(refused)})
        raise Exception(UNAUTHORIZED) from None  # API Gateway reads the message, not the type
    except IssuerUnavailable:
        logger.exception("bearer token not checked")
        raise
    # One policy for the whole stage: API Gateway keeps it for the token (ReauthorizeEvery) and asks no more.
    arn, _, path = event["methodArn"].partition("/")
    stage = path.split("/", 1)[0]
    return {
        "principalId": bearer.subject,
        "policyDocument": {
            "Version": "2012-10-17",
            "Statement": [{"Action": "execute-api:Invoke", "Effect": "Allow", "Resource": f"{arn}/{stage}/*"}],
        },
        "context": {"name": bearer.name},
    }


cold_start.init_done()
