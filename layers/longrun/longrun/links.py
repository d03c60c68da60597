"""Where the API's resources are, for the client that asked."""

from __future__ import annotations

from dataclasses import dataclass

TASKS = "/device-management/script-execution"
WEBHOOKS = "/device-management/webhooks"


@dataclass(frozen=True)
class Links:
    """``base`` is what comes before the API's own paths on the URL the client used: the stage on the execute-api
    URL, a custom domain's base path, or nothing; or the API's whole base URL, for links sent outside a request."""

    base: str = ""

    def task(self, task_id: str) -> str:
        return f"{self.base}{TASKS}/{task_id}"

    def result(self, task_id: str) -> str:
        return f"{self.task(task_id)}/result"

    def webhook(self, webhook_id: str) -> str:
        return f"{self.base}{WEBHOOKS}/{webhook_id}"
