"""Who a request comes from, and so who owns what it makes and sees (the README's "Who owns a task")."""

from __future__ import annotations

from longrun.models import Owner


def owner_of(principal: str | None, caller: str | None, user_arn: str | None, owner_scope: str) -> Owner | None:
    """The owner of a request: an authorizer's principal, or the IAM caller (its unique id: the IAM user, or the role
    and session name; every session of the role with the owner scope ``role``); None when it has neither."""
    if principal:
        return Owner(key=f"principal:{principal}", name=principal)
    if not caller:
        return None
    arn = user_arn or ""
    if owner_scope == "role" and ":assumed-role/" in arn:
        return Owner(key=f"iam:{caller.split(':', 1)[0]}", name=arn.rsplit("/", 1)[0])
    return Owner(key=f"iam:{caller}", name=arn or caller)
