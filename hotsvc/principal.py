"""Who is calling: the authenticated principal the domain decides ownership and quotas by.

The gRPC layer authenticates every call (hotsvc.grpc.auth) and hands the principal to the
domain as a plain value; nothing below the boundary looks at credentials.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Principal:
    name: str
    admin: bool = False  # sees and may close every session

    def may_use(self, owner: str) -> bool:
        """May this principal attach to, drive or close a session `owner` opened?"""
        return self.admin or owner == self.name

    @property
    def subject(self) -> str:
        """How quota failures and the audit log name it."""
        return f"principal:{self.name}"


# With no authentication configured (loopback only, or --insecure-no-auth) every caller
# is this one principal: it owns every session, as before there was authentication.
LOCAL = Principal("local", admin=True)
