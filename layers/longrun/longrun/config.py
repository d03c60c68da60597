"""The deployment's settings, as the template hands them to the functions through the environment."""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cache


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
    )
