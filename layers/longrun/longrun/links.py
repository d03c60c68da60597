"""Where the API's resources are, for the client that asked."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote

TASKS = "/device-management/script-execution"
WEBHOOKS = "/device-management/webhooks"
SCRIPTS = "/device-management/scripts"


@dataclass(frozen=True)
class Links:
    """``base`` is what comes before the API's own paths on the URL the client used: the stage on the execute-api
    URL, a custom domain's base path, or nothing; or the API's whole base URL, for links sent outside a request."""

    base: str = ""

    def task(self, task_id: str) -> str:
        return f"{self.base}{TASKS}/{task_id}"

    def result(self, task_id: str) -> str:
        return f"{self.task(task_id)}/result"

    def devices(self, task_id: str) -> str:
        return f"{self.task(task_id)}/devices"

    def device(self, task_id: str, device_id: str | int) -> str:
        """A device of a task: its id URL-encoded (``/`` too), an integer id by its decimal form."""
        return f"{self.devices(task_id)}/{quote(str(device_id), safe='')}"

    def webhook(self, webhook_id: str) -> str:
        return f"{self.base}{WEBHOOKS}/{webhook_id}"
