"""Who a call comes from, by whichever methods are configured; no gRPC types here.

- `authorization: Bearer TOKEN` metadata: a token from `--auth-tokens`, else (when
  `--jwt-public-key` is set) a JWT. A bearer credential, when sent, decides: a bad one is
  refused even if the connection also has a client certificate, so a gateway holding a
  certificate can pass its users' own tokens on.
- Otherwise, with `--tls-client-ca`, the verified client certificate: its URI SAN, else
  its DNS SAN, else its subject CN. gRPC only reports these for a verified peer.
- With none configured every caller is `local` (hotsvc.principal.LOCAL); start-up refuses
  that on anything but loopback unless `--insecure-no-auth`.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Iterable, Mapping, Sequence

from hotsvc.auth.jwts import JwtConfigError, JwtRejected, JwtVerifier
from hotsvc.auth.tokens import TokenFile, TokenFileError
from hotsvc.errors import Unauthenticated
from hotsvc.principal import LOCAL, Principal
from hotsvc.profiles import ConfigError
from hotsvc.settings import ServiceConfig

log = logging.getLogger(__name__)

AUTH_FLAGS = "--auth-tokens, --jwt-public-key or --tls-client-ca"
# Certificate identities in gRPC's auth context, most specific first.
CERT_PROPERTIES = ("peer_uri", "peer_dns", "x509_common_name")

Metadata = Sequence[tuple[str, str | bytes]]
AuthContext = Mapping[str, Iterable[bytes]]


def is_loopback(listen: str) -> bool:
    host = listen.rsplit(":", 1)[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name that may resolve anywhere, or "" (every interface)


class Authenticator:
    def __init__(
        self, tokens: TokenFile | None, jwt: JwtVerifier | None, client_certificates: bool
    ) -> None:
        self.tokens = tokens
        self.jwt = jwt
        self.client_certificates = client_certificates

    @classmethod
    def from_config(cls, config: ServiceConfig) -> Authenticator:
        """The configured methods, with their files read; raises ConfigError."""
        try:
            tokens = TokenFile(config.auth_tokens) if config.auth_tokens else None
            jwt = (
                JwtVerifier(
                    config.jwt_public_key,
                    config.jwt_issuer,
                    config.jwt_audience,
                    config.jwt_admin_claim,
                )
                if config.jwt_public_key
                else None
            )
        except (TokenFileError, JwtConfigError) as exc:
            raise ConfigError(str(exc)) from None
        authenticator = cls(tokens, jwt, client_certificates=config.tls_client_ca is not None)
        exposed = [
            f"{flag} {address}"
            for flag, address in (
                ("--listen", config.listen),
                ("--http-listen", config.http_listen),
            )
            if address and not is_loopback(address)
        ]
        if not authenticator.configured and exposed:
            if not config.insecure_no_auth:
                raise ConfigError(
                    f"{' and '.join(exposed)} is not loopback and no authentication is "
                    f"configured: anyone who can reach it could read and drive every session. "
                    f"Configure {AUTH_FLAGS} (with --tls-cert/--tls-key), or pass "
                    "--insecure-no-auth if something in front of hotsvc authenticates"
                )
            log.warning(
                "--insecure-no-auth: serving %s with no authentication; every caller is "
                "principal %r and may read, drive and close every session",
                " and ".join(exposed),
                LOCAL.name,
            )
        return authenticator

    @property
    def configured(self) -> bool:
        return bool(self.tokens or self.jwt or self.client_certificates)

    def authenticate(self, metadata: Metadata, auth_context: AuthContext) -> tuple[Principal, str]:
        """The caller's principal and how it was established (`token`, `jwt`, `mtls`,
        `none`); raises Unauthenticated."""
        if not self.configured:
            return LOCAL, "none"
        header = next((str(v) for k, v in metadata if k == "authorization"), None)
        if header is not None:
            return self._bearer(header)
        if self.client_certificates and (name := certificate_name(auth_context)):
            return Principal(name), "mtls"
        raise Unauthenticated(
            f"hotsvc needs credentials: {self.how_to()}", metadata={"credential": "missing"}
        )

    def _bearer(self, header: str) -> tuple[Principal, str]:
        scheme, _, token = header.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise Unauthenticated(
                f"the authorization metadata must be `Bearer TOKEN`; {self.how_to()}",
                metadata={"credential": "malformed"},
            )
        if self.tokens is not None and (principal := self.tokens.lookup(token)):
            return principal, "token"
        if self.jwt is not None:
            try:
                return self.jwt.verify(token), "jwt"
            except JwtRejected as exc:
                known = "not a known token and " if self.tokens else ""
                raise Unauthenticated(
                    f"the bearer token is {known}not an accepted JWT ({exc}); {self.how_to()}",
                    metadata={"credential": "jwt"},
                ) from None
        if self.tokens is None:
            raise Unauthenticated(
                f"this service takes no bearer tokens; {self.how_to()}",
                metadata={"credential": "unexpected"},
            )
        raise Unauthenticated(
            f"unknown bearer token (revoked, mistyped, or not yet loaded: hotsvc reads "
            f"{self.tokens.path} again on SIGHUP); {self.how_to()}",
            metadata={"credential": "token"},
        )

    def how_to(self) -> str:
        ways = []
        if self.tokens is not None:
            ways.append("`authorization: Bearer TOKEN` metadata with a token from `hotsvc token`")
        if self.jwt is not None:
            ways.append(f"`authorization: Bearer JWT` with {self.jwt.expected}")
        if self.client_certificates:
            ways.append("a client certificate signed by the --tls-client-ca authority")
        return "send " + ", or ".join(ways)

    def reload_tokens(self) -> int:
        """Read the token file again (SIGHUP); returns how many principals it names.
        Raises TokenFileError and keeps the old table when the file is bad."""
        if self.tokens is None:
            return 0
        self.tokens.reload()
        return self.tokens.table.principals


def certificate_name(auth_context: AuthContext) -> str:
    """The verified client certificate's identity, "" without one."""
    for key in CERT_PROPERTIES:
        for value in auth_context.get(key, ()):
            if name := value.decode("utf-8", "replace").strip():
                return name
    return ""
