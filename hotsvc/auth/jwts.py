"""JWT bearer tokens from an identity provider: `--jwt-public-key`, `--jwt-issuer`,
`--jwt-audience`, `--jwt-admin-claim`.

The accepted algorithm follows from the key, never from the token: an RSA key accepts
RS256 only, a P-256 key ES256, an Ed25519/Ed448 key EdDSA. So `none`, and an HS256 token
"signed" with the public key's bytes, are refused before any signature is looked at.
The token must carry `exp`, `iss`, `aud` and `sub`; `sub` is the principal.

`--jwt-admin-claim CLAIM=VALUE` (e.g. `roles=hotsvc-admin`, or a dotted path such as
`realm_access.roles=hotsvc-admin`): the principal is an admin when that claim is VALUE,
a list holding VALUE, or a space-separated string holding it (like OAuth's `scope`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

from hotsvc.principal import Principal

LEEWAY_SECONDS = 30  # clock skew between the identity provider and this host
MIN_RSA_BITS = 2048


class JwtConfigError(Exception):
    """The JWT settings cannot be used; the message says what to fix."""


class JwtRejected(Exception):
    """The token is not an accepted JWT; the message says why (expired, wrong audience...)."""


def algorithm_for(key: PublicKeyTypes) -> str:
    """The one algorithm `key` may verify."""
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < MIN_RSA_BITS:
            raise JwtConfigError(f"the RSA key has {key.key_size} bits; use >= {MIN_RSA_BITS}")
        return "RS256"
    if isinstance(key, ec.EllipticCurvePublicKey):
        if not isinstance(key.curve, ec.SECP256R1):
            raise JwtConfigError(f"the EC key is on {key.curve.name}; ES256 needs P-256")
        return "ES256"
    if isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
        return "EdDSA"
    raise JwtConfigError(
        f"a {type(key).__name__} cannot verify JWTs here; use an RSA, P-256 or Ed25519 key"
    )


def parse_admin_claim(text: str) -> tuple[tuple[str, ...], str] | None:
    if not text:
        return None
    path, sep, value = text.partition("=")
    if not sep or not path or not value:
        raise JwtConfigError(
            f"--jwt-admin-claim {text!r} must be CLAIM=VALUE, e.g. roles=hotsvc-admin"
        )
    return tuple(path.split(".")), value


class JwtVerifier:
    def __init__(self, key_file: Path, issuer: str, audience: str, admin_claim: str) -> None:
        if not issuer or not audience:
            raise JwtConfigError(
                "--jwt-public-key needs --jwt-issuer and --jwt-audience: without them a token "
                "your identity provider minted for another service would be accepted here"
            )
        try:
            key = serialization.load_pem_public_key(key_file.read_bytes())
        except (OSError, ValueError) as exc:
            raise JwtConfigError(f"cannot read a PEM public key from {key_file}: {exc}") from exc
        self.algorithm = algorithm_for(key)
        self._key = key
        self._issuer = issuer
        self._audience = audience
        self._admin = parse_admin_claim(admin_claim)

    @property
    def expected(self) -> str:
        return f"an {self.algorithm} JWT issued by {self._issuer} for audience {self._audience}"

    def verify(self, token: str) -> Principal:
        """The token's principal; raises JwtRejected."""
        try:
            claims = jwt.decode(
                token,
                self._key,  # type: ignore[arg-type]  # any key algorithm_for() accepted
                algorithms=[self.algorithm],
                issuer=self._issuer,
                audience=self._audience,
                leeway=LEEWAY_SECONDS,
                options={"require": ["exp", "iss", "aud", "sub"]},
            )
        except jwt.InvalidTokenError as exc:
            raise JwtRejected(str(exc)) from None
        subject = claims["sub"]
        if not isinstance(subject, str) or not subject.strip():
            raise JwtRejected("its `sub` claim, the principal, is empty")
        return Principal(subject, admin=self._is_admin(claims))

    def _is_admin(self, claims: dict[str, Any]) -> bool:
        if self._admin is None:
            return False
        path, wanted = self._admin
        value: Any = claims
        for part in path:
            value = value.get(part) if isinstance(value, dict) else None
        if isinstance(value, str):
            return wanted in value.split()
        return isinstance(value, list) and wanted in value
