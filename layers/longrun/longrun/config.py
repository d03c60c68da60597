"""The deployment's settings, as the template hands them to the functions through the environment."""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cache

WEBHOOK_RETRY_SCHEDULE = (0, 5, 300, 1800, 7200, 18000, 36000, 36000)
"""Standard Webhooks' schedule: immediately, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h"""


@dataclass(frozen=True)
class Settings:
    tasks_table: str
    scripts_bucket: str
    device_id_tag_key: str
    output_prefix: str
    state_machine_arn: str | None
    """Only the API starts executions; the workflow's own functions are not told the machine (no cycle)."""
    owner_scope: str = "session"
    """Who owns a task made with an assumed role: the role session (default) or every session of the role"""
    report_grace_seconds: int = 120
    """How long past a batch's longest possible run the workflow waits for SSM's last report"""
    api_url: str = ""
    """The REST API's base URL (the stage's), which events' links start with"""
    event_bus_name: str | None = None
    websocket_connections_url: str | None = None
    """The WebSocket API's stage URL, where the @connections management API is"""
    webhook_delivery_queue_url: str | None = None
    webhook_retry_schedule: tuple[int, ...] = WEBHOOK_RETRY_SCHEDULE
    """Seconds before each attempt to deliver a webhook"""
    webhook_allow_loopback_http: bool = False
    """Webhook URLs may be plain http to a loopback address (the local runtime's tests)"""
    page_token_key_name: str | None = None
    """The Secrets Manager secret whose value seals page tokens (the API only)"""
    task_retention_days: int = 90
    """How long a finished task is kept (the TaskRetentionDays parameter)"""
    idempotency_table: str | None = None
    """Where Powertools' idempotency utility keeps a record per Idempotency-Key (the API only)"""
    jwt_issuer: str = ""
    """With the JWT authorizer, the issuer whose tokens the API takes (the JWT authorizer only)"""
    jwt_audience: str = ""
    """With the JWT authorizer, the client those tokens must be for"""


@cache
def settings() -> Settings:
    env = os.environ
    return Settings(
        tasks_table=env["TASKS_TABLE"],
        scripts_bucket=env["SCRIPTS_BUCKET"],
        device_id_tag_key=env.get("DEVICE_ID_TAG_KEY", "DeviceId"),
        output_prefix=env.get("OUTPUT_PREFIX", "output"),
        state_machine_arn=env.get("STATE_MACHINE_ARN"),
        owner_scope=env.get("OWNER_SCOPE", "session"),
        report_grace_seconds=int(env.get("REPORT_GRACE_SECONDS", "120")),
        api_url=env.get("API_URL", ""),
        event_bus_name=env.get("EVENT_BUS_NAME"),
        websocket_connections_url=env.get("WEBSOCKET_CONNECTIONS_URL"),
        webhook_delivery_queue_url=env.get("WEBHOOK_DELIVERY_QUEUE_URL"),
        webhook_retry_schedule=tuple(int(seconds) for seconds in env["WEBHOOK_RETRY_SCHEDULE"].split(","))
        if env.get("WEBHOOK_RETRY_SCHEDULE")
        else WEBHOOK_RETRY_SCHEDULE,
        webhook_allow_loopback_http=env.get("WEBHOOK_ALLOW_LOOPBACK_HTTP", "false") == "true",
        page_token_key_name=env.get("PAGE_TOKEN_KEY_NAME"),
        task_retention_days=int(env.get("TASK_RETENTION_DAYS", "90")),
        idempotency_table=env.get("IDEMPOTENCY_TABLE"),
        jwt_issuer=env.get("JWT_ISSUER", ""),
        jwt_audience=env.get("JWT_AUDIENCE", ""),
    )
