"""The compact JWS form (`header.payload.signature`) for the two tokens on the refresh path: ES256 access
tokens (signed here, verified by PyJWT) and HS256 refresh tokens (signed and verified here).

Ours rather than PyJWT's on that path only: PyJWT prepares the key on every call, and for an HMAC key that
means sniffing it for PEM and SSH markers, which with its generic checks cost more than the HMAC itself
(about a quarter of a refresh's CPU time in a profile). What is checked here is exactly what a JWS needs: the
header's algorithm (only the expected one), the signature (in constant time), JSON objects in both parts,
base64url without padding or stray characters. Claims (expiry, issuer, ...) are the caller's to check. The
HMACs are `hmac.digest`, OpenSSL's one-shot, rather than an `hmac.new` object built per token.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from typing import Any

import orjson
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

_ES256 = ec.ECDSA(hashes.SHA256())
_HS256_HEADER = b"eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9"  # {"alg":"HS256","typ":"JWT"}
_HS256_HEADER_TEXT = _HS256_HEADER.decode()


class MalformedToken(Exception):
    """Not a compact JWS of the expected algorithm, or its signature does not match."""


def b64(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def _unb64(segment: str) -> bytes:
    try:
        return base64.b64decode(segment + "=" * (-len(segment) % 4), altchars=b"-_", validate=True)
    except (binascii.Error, ValueError) as exc:
        raise MalformedToken("not base64url") from exc


def _json_object(data: bytes) -> dict[str, Any]:
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise MalformedToken("not JSON") from exc
    if not isinstance(value, dict):
        raise MalformedToken("not a JSON object")
    return value


def header_for(algorithm: str, key_id: str) -> bytes:
    """The encoded header of tokens signed with one key: computed once per key, not per token."""
    return b64(orjson.dumps({"alg": algorithm, "typ": "JWT", "kid": key_id}))


def sign_es256(encoded_header: bytes, claims: dict[str, Any], key: ec.EllipticCurvePrivateKey) -> str:
    signing_input = encoded_header + b"." + b64(orjson.dumps(claims))
    r, s = decode_dss_signature(key.sign(signing_input, _ES256))
    return (signing_input + b"." + b64(r.to_bytes(32, "big") + s.to_bytes(32, "big"))).decode()


def sign_hs256(claims: dict[str, Any], key: bytes) -> str:
    signing_input = _HS256_HEADER + b"." + b64(orjson.dumps(claims))
    signature = hmac.digest(key, signing_input, "sha256")
    return (signing_input + b"." + b64(signature)).decode()


def verify_hs256(token: str, key: bytes) -> dict[str, Any]:
    """The claims of an HS256 token signed with `key`; MalformedToken for anything else."""
    header, dot, rest = token.partition(".")
    payload, dot2, signature = rest.partition(".")
    if not dot or not dot2 or "." in signature:
        raise MalformedToken("not a compact JWS")
    # The header we (and PyJWT) write, compared as it is; any other is read.
    if header != _HS256_HEADER_TEXT and _json_object(_unb64(header)).get("alg") != "HS256":
        raise MalformedToken("not HS256")
    expected = hmac.digest(key, f"{header}.{payload}".encode(), "sha256")
    if not hmac.compare_digest(expected, _unb64(signature)):
        raise MalformedToken("bad signature")
    return _json_object(_unb64(payload))
