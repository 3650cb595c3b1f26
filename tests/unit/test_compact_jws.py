"""The compact JWS helpers agree with PyJWT both ways, and refuse what PyJWT refuses."""

from __future__ import annotations

import base64
import json
import time

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from kilnbase.keys.compact_jws import MalformedToken, header_for, sign_es256, sign_hs256, verify_hs256

KEY = b"k" * 32
CLAIMS = {"sub": "u1", "sid": "f1", "exp": int(time.time()) + 86400, "name": "Zoë"}


def _b64(data: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def test_hs256_round_trips_and_matches_pyjwt() -> None:
    token = sign_hs256(CLAIMS, KEY)
    assert verify_hs256(token, KEY) == CLAIMS
    assert jwt.decode(token, KEY, algorithms=["HS256"]) == CLAIMS
    assert verify_hs256(jwt.encode(CLAIMS, KEY, algorithm="HS256"), KEY) == CLAIMS


def test_es256_is_what_pyjwt_verifies() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    token = sign_es256(header_for("ES256", "kid-1"), CLAIMS, key)
    assert jwt.get_unverified_header(token) == {"alg": "ES256", "typ": "JWT", "kid": "kid-1"}
    assert jwt.decode(token, key.public_key(), algorithms=["ES256"]) == CLAIMS


@pytest.mark.parametrize(
    "forge",
    [
        lambda t: t[:-2] + ("AA" if t[-2:] != "AA" else "BB"),  # signature changed
        lambda t: t + ".x",  # four segments
        lambda t: t.rsplit(".", 1)[0],  # no signature
        lambda t: t.replace(".", "!", 1),
        lambda t: _b64({"alg": "none"}) + "." + t.split(".", 1)[1],
        lambda t: _b64({"alg": "HS512"}) + "." + t.split(".", 1)[1],
        lambda t: t[: t.rindex(".") + 1] + "*" + t[t.rindex(".") + 2 :],  # a stray character
        lambda t: "",
        lambda t: "a.b.c",
    ],
)
def test_anything_but_our_signature_is_refused(forge: object) -> None:
    token = sign_hs256(CLAIMS, KEY)
    with pytest.raises(MalformedToken):
        verify_hs256(forge(token), KEY)  # type: ignore[operator]


def test_another_key_is_refused() -> None:
    with pytest.raises(MalformedToken):
        verify_hs256(sign_hs256(CLAIMS, b"other key" * 4), KEY)


def test_a_payload_that_is_not_an_object_is_refused() -> None:
    token = jwt.api_jws.encode(b"[1, 2]", KEY, algorithm="HS256")
    with pytest.raises(MalformedToken):
        verify_hs256(token, KEY)
