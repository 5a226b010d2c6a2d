"""One call or request admitted or refused, the same way for gRPC and HTTP."""

from __future__ import annotations

import logging

from hotsvc import logs, metrics
from hotsvc.audit import AuditLog
from hotsvc.auth.authenticator import AuthContext, Authenticator, Metadata
from hotsvc.errors import Unauthenticated
from hotsvc.principal import Principal

log = logging.getLogger(__name__)


def admit(
    authenticator: Authenticator,
    audit: AuditLog,
    metadata: Metadata,
    auth_context: AuthContext,
    peer: str,
    method: str,
) -> Principal:
    """The caller's principal, audited and bound to the caller's log lines (run it in the
    call's own task); raises Unauthenticated (logged, audited and counted)."""
    try:
        principal, via = authenticator.authenticate(metadata, auth_context)
    except Unauthenticated as refused:
        log.info("refused %s from %s: %s", method, peer, refused.message)
        metrics.auth_failed(refused.metadata.get("credential", ""))
        audit.record("auth.denied", peer=peer, method=method, reason=refused.message)
        raise
    audit.record(
        "auth.ok",
        principal=principal.name,
        admin=principal.admin,
        via=via,
        peer=peer,
        method=method,
    )
    logs.bind(principal=principal.name)
    return principal
