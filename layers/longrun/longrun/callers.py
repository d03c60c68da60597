"""Who a request comes from, and so who owns what it makes and sees (the README's "Who owns a task")."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from longrun.records import Owner


def owner_of(
    authorizer: Mapping[str, Any] | None, caller: str | None, user_arn: str | None, owner_scope: str
) -> Owner | None:
    """The owner of a request: the principal the API's Lambda authorizer answered (named by its ``name`` context,
    if it gave one), or the IAM caller (its unique id: the IAM user, or the role and session name; every session of
    the role with the owner scope ``role``); None when it has neither."""
    principal = (authorizer or {}).get("principalId")
    if principal:
        return Owner(key=f"principal:{principal}", name=str((authorizer or {}).get("name") or principal))
    if not caller:
        return None
    arn = user_arn or ""
    if owner_scope == "role" and ":assumed-role/" in arn:
        return Owner(key=f"iam:{caller.split(':', 1)[0]}", name=arn.rsplit("/", 1)[0])
    return Owner(key=f"iam:{caller}", name=arn or caller)
