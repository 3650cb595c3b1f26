"""SigV4 checks against AWS's own published example (streaming upload in signed chunks), and the
aws-chunked decoder for the unsigned-trailer payloads current SDKs send over HTTPS."""

from __future__ import annotations

import base64
import zlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

from kilnbase.storage import s3_signature as sigv4

SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
SEED = "4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9"
CHUNK_SIGNATURES = [
    "ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648",
    "0055627c9e194cb4542bae2aa5492e3c1575bbb81b612b7d234b86a503ef5497",
    "b6c6ea8a5354eaf15b3cb7646744f4275b71ea724fed81ceb9323e279d449df9",
]
HEADERS = {
    "host": "s3.amazonaws.com",
    "x-amz-date": "20130524T000000Z",
    "x-amz-storage-class": "REDUCED_REDUNDANCY",
    "authorization": (
        "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request,"
        "SignedHeaders=content-encoding;content-length;host;x-amz-content-sha256;x-amz-date;"
        f"x-amz-decoded-content-length;x-amz-storage-class,Signature={SEED}"
    ),
    "x-amz-content-sha256": "STREAMING-AWS4-HMAC-SHA256-PAYLOAD",
    "content-encoding": "aws-chunked",
    "x-amz-decoded-content-length": "66560",
    "content-length": "66824",
}
WHEN = datetime(2013, 5, 24, tzinfo=UTC)


def _body(signatures: list[str]) -> bytes:
    sizes = [65536, 1024, 0]
    out = b""
    for size, signature in zip(sizes, signatures, strict=True):
        out += f"{size:x};chunk-signature={signature}\r\n".encode() + b"a" * size + b"\r\n"
    return out


async def _pieces(data: bytes, step: int = 7000) -> AsyncIterator[bytes]:
    for start in range(0, len(data), step):
        yield data[start : start + step]


async def _decode(body: bytes) -> bytes:
    signed = sigv4.parse("PUT", HEADERS, [])
    key = sigv4.verify(
        signed,
        SECRET,
        method="PUT",
        raw_path="/examplebucket/chunkObject.txt",
        query=[],
        headers=HEADERS,
        now=WHEN,
    )
    out = b""
    async for piece in sigv4.decode_aws_chunked(_pieces(body), signed=signed, key=key):
        out += piece
    return out


@pytest.mark.anyio
async def test_aws_example_seed_and_chunk_signatures() -> None:
    assert await _decode(_body(CHUNK_SIGNATURES)) == b"a" * 66560


@pytest.mark.anyio
async def test_altered_chunk_is_refused() -> None:
    tampered = _body(CHUNK_SIGNATURES).replace(b"a" * 10, b"b" * 10, 1)
    with pytest.raises(sigv4.SignatureError) as refused:
        await _decode(tampered)
    assert refused.value.code == "SignatureDoesNotMatch"
    reordered = [CHUNK_SIGNATURES[1], CHUNK_SIGNATURES[0], CHUNK_SIGNATURES[2]]
    with pytest.raises(sigv4.SignatureError):
        await _decode(_body(reordered))


def test_expired_and_skewed_requests_refused() -> None:
    signed = sigv4.parse("PUT", HEADERS, [])
    with pytest.raises(sigv4.SignatureError) as skewed:
        sigv4.verify(
            signed, SECRET, method="PUT", raw_path="/examplebucket/chunkObject.txt", query=[], headers=HEADERS
        )
    assert skewed.value.code == "RequestTimeTooSkewed"


@pytest.mark.parametrize("expires", ["\u00b2", "9" * 5000])
def test_a_presigned_expiry_in_other_digits_is_refused_not_a_crash(expires: str) -> None:
    """`X-Amz-Expires` is checked before the signature: a superscript two is a digit to str.isdigit, and
    int() of it used to raise (a 500 for anyone who knew an access key id)."""
    query = [
        ("X-Amz-Algorithm", "AWS4-HMAC-SHA256"),
        ("X-Amz-Credential", "AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request"),
        ("X-Amz-Date", "20130524T000000Z"),
        ("X-Amz-Expires", expires),
        ("X-Amz-SignedHeaders", "host"),
        ("X-Amz-Signature", "0" * 64),
    ]
    signed = sigv4.parse("GET", {"host": "s3.amazonaws.com"}, query)
    with pytest.raises(sigv4.SignatureError) as refused:
        sigv4.verify(
            signed, SECRET, method="GET", raw_path="/b/k", query=query, headers={"host": "x"}, now=WHEN
        )
    assert refused.value.code == "AuthorizationQueryParametersError"


@pytest.mark.anyio
async def test_unsigned_trailer_payload() -> None:
    data = b"hello trailer world" * 1000
    checksum = base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()
    body = (
        f"{len(data):x}\r\n".encode()
        + data
        + b"\r\n0\r\n"
        + f"x-amz-checksum-crc32:{checksum}\r\n\r\n".encode()
    )
    out = b""
    async for piece in sigv4.decode_aws_chunked(
        _pieces(body, 333), signed=None, key=None, trailer_check=sigv4.check_crc32_trailer
    ):
        out += piece
    assert out == data
    bad = body.replace(checksum.encode(), b"AAAAAA==")
    with pytest.raises(sigv4.SignatureError) as refused:
        async for _ in sigv4.decode_aws_chunked(
            _pieces(bad), signed=None, key=None, trailer_check=sigv4.check_crc32_trailer
        ):
            pass
    assert refused.value.code == "BadDigest"


@pytest.mark.timeout(20)
@pytest.mark.parametrize("size", ["-1", "+5", "0x5", "5_0", " 5"])
@pytest.mark.anyio
async def test_a_chunk_size_not_in_plain_hex_is_refused(size: str) -> None:
    """`int(text, 16)` takes a sign, a 0x prefix, underscores and spaces; a negative size made the decoder
    spin without awaiting, which stopped the whole server's event loop."""
    body = f"{size}\r\n".encode() + b"hello" * 20 + b"\r\n0\r\n\r\n"
    with pytest.raises(sigv4.SignatureError) as refused:
        async for _ in sigv4.decode_aws_chunked(_pieces(body, 9), signed=None, key=None):
            pass
    assert refused.value.code == "IncompleteBody"


@pytest.mark.parametrize("signature", ["\u00e9" * 64, "0" * 63 + "\u00ff"])
def test_a_signature_outside_ascii_is_refused_not_a_crash(signature: str) -> None:
    """Header values arrive as Latin-1 and query values as UTF-8: `hmac.compare_digest` raises on str
    that is not ASCII, which was a 500 for anyone who knew an access key id."""
    headers = {**HEADERS, "authorization": HEADERS["authorization"].replace(SEED, signature)}
    signed = sigv4.parse("PUT", headers, [])
    with pytest.raises(sigv4.SignatureError) as refused:
        sigv4.verify(
            signed,
            SECRET,
            method="PUT",
            raw_path="/examplebucket/chunkObject.txt",
            query=[],
            headers=headers,
            now=WHEN,
        )
    assert refused.value.code == "SignatureDoesNotMatch"


@pytest.mark.anyio
async def test_a_chunk_signature_outside_ascii_is_refused_not_a_crash() -> None:
    body = _body(CHUNK_SIGNATURES).replace(CHUNK_SIGNATURES[0].encode(), "\u00e9".encode("latin-1") * 64)
    with pytest.raises(sigv4.SignatureError) as refused:
        await _decode(body)
    assert refused.value.code == "SignatureDoesNotMatch"


def test_a_header_signature_that_does_not_sign_host_is_refused_as_s3_does() -> None:
    """SigV4 requires `host` among the signed headers: unsigned, a signature made for one endpoint would be
    good at any other that shares the key. S3 refuses it before checking the signature."""
    authorization = HEADERS["authorization"].replace("content-length;host;", "content-length;")
    with pytest.raises(sigv4.SignatureError) as refused:
        sigv4.parse("PUT", {**HEADERS, "authorization": authorization}, [])
    assert (refused.value.code, refused.value.status) == ("AccessDenied", 403)
    assert refused.value.message == "There were headers present in the request which were not signed"
    assert refused.value.headers_not_signed == "host"


@pytest.mark.parametrize("signed_headers", ["", "x-amz-date", "hostname"])
def test_a_presigned_url_that_does_not_sign_host_is_refused(signed_headers: str) -> None:
    query = [
        ("X-Amz-Algorithm", "AWS4-HMAC-SHA256"),
        ("X-Amz-Credential", "AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request"),
        ("X-Amz-Date", "20130524T000000Z"),
        ("X-Amz-Expires", "60"),
        ("X-Amz-SignedHeaders", signed_headers),
        ("X-Amz-Signature", "0" * 64),
    ]
    with pytest.raises(sigv4.SignatureError) as refused:
        sigv4.parse("GET", {"host": "s3.amazonaws.com"}, query)
    assert (refused.value.code, refused.value.headers_not_signed) == ("AccessDenied", "host")
