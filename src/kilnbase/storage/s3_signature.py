"""AWS Signature Version 4 as S3 clients send it, checked against Kilnbase's S3 access keys: the
`Authorization` header, query-string presigned URLs, and the two streaming payloads current clients use
(`STREAMING-AWS4-HMAC-SHA256-PAYLOAD`, each chunk signed and chained to the previous signature; and
`STREAMING-UNSIGNED-PAYLOAD-TRAILER`, aws-chunked with a trailing checksum). A signed payload hash
(`x-amz-content-sha256: <hex>`) is checked once the body has been read, before the object is committed.

Written here rather than taken from botocore: botocore signs requests but does not verify them, and the
server side needs the chunk decoder and constant-time comparisons anyway.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import zlib
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import quote, unquote

from kilnbase.storage.whole_numbers import is_whole_number

ALGORITHM = "AWS4-HMAC-SHA256"
UNSIGNED = "UNSIGNED-PAYLOAD"
STREAMING_SIGNED = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"
STREAMING_SIGNED_TRAILER = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER"
STREAMING_UNSIGNED_TRAILER = "STREAMING-UNSIGNED-PAYLOAD-TRAILER"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
#: How far a request's X-Amz-Date may be from now (AWS allows 15 minutes).
CLOCK_SKEW_SECONDS = 15 * 60
MAX_PRESIGN_SECONDS = 7 * 24 * 3600
_CREDENTIAL = re.compile(r"^([^/]+)/([0-9]{8})/([^/]+)/s3/aws4_request$")
_MAX_CHUNK_HEADER = 4096
#: A chunk's size, as aws-chunked writes it: hex digits alone (`int(text, 16)` also takes a sign, `0x`, `_`
#: and spaces, and a negative size made the decoder spin without ever awaiting).
_CHUNK_SIZE = re.compile(r"[0-9a-fA-F]{1,16}")
#: The largest aws-chunked chunk accepted (a signed chunk is held until its signature is checked).
MAX_CHUNK_BYTES = 16 * 1024 * 1024


class SignatureError(Exception):
    """The request is not signed as S3 requires; `code` is S3's error code. `headers_not_signed` names the
    headers S3 wanted signed and were not (S3 lists them in its error, as `HeadersNotSigned`)."""

    def __init__(self, code: str, message: str, status: int = 403, headers_not_signed: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status
        self.headers_not_signed = headers_not_signed


@dataclass(frozen=True)
class SignedRequest:
    access_key_id: str
    date: str  # yyyymmdd
    region: str
    amz_date: str
    signed_headers: list[str]
    signature: str
    payload_hash: str
    presigned: bool

    @property
    def scope(self) -> str:
        return f"{self.date}/{self.region}/s3/aws4_request"


def _uri_encode(value: str) -> str:
    return quote(value, safe="-_.~")


def same_digest(expected: str, given: str) -> bool:
    """Constant-time equality of an expected hex digest and what the client sent, as bytes:
    `hmac.compare_digest` raises on str that is not ASCII, and a header arrives as Latin-1."""
    return hmac.compare_digest(expected.encode(), given.encode("utf-8", "replace"))


def query_pairs(raw_query: bytes) -> list[tuple[str, str]]:
    """The query string's names and values, each percent-decoded once (strictly as UTF-8), in order: what the
    signature is checked over (re-encoded once, as the client encoded them) and what the request then means.
    `+` stays a plus sign, as in SigV4's encoding (a space is `%20`)."""
    pairs = []
    try:
        for piece in raw_query.decode("latin-1").split("&"):
            if piece:
                name, _, value = piece.partition("=")
                pairs.append((unquote(name, errors="strict"), unquote(value, errors="strict")))
    except UnicodeDecodeError:
        raise SignatureError("InvalidArgument", "The query string is not valid UTF-8.", 400) from None
    return pairs


def signing_key(secret: str, date: str, region: str) -> bytes:
    key = ("AWS4" + secret).encode()
    for part in (date, region, "s3", "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return key


def _parse_authorization(header: str) -> tuple[str, list[str], str]:
    algorithm, _, rest = header.partition(" ")
    if algorithm != ALGORITHM:
        raise SignatureError("AuthorizationHeaderMalformed", "Only AWS4-HMAC-SHA256 is supported.", 400)
    fields: dict[str, str] = {}
    for part in rest.split(","):
        name, _, value = part.strip().partition("=")
        fields[name] = value
    try:
        return fields["Credential"], fields["SignedHeaders"].split(";"), fields["Signature"]
    except KeyError:
        raise SignatureError(
            "AuthorizationHeaderMalformed", "The authorization header is malformed.", 400
        ) from None


def parse(method: str, headers: Mapping[str, str], query: list[tuple[str, str]]) -> SignedRequest:
    """Who signed the request and how (not yet checked): from the header, or from a presigned URL's query."""
    params = dict(query)
    if "X-Amz-Signature" in params:
        if params.get("X-Amz-Algorithm") != ALGORITHM:
            raise SignatureError(
                "AuthorizationQueryParametersError", "X-Amz-Algorithm must be AWS4-HMAC-SHA256.", 400
            )
        credential = params.get("X-Amz-Credential", "")
        signed_headers = params.get("X-Amz-SignedHeaders", "").split(";")
        signature = params["X-Amz-Signature"]
        amz_date = params.get("X-Amz-Date", "")
        payload = UNSIGNED
        presigned = True
    else:
        authorization = headers.get("authorization")
        if not authorization:
            raise SignatureError("AccessDenied", "Access Denied: the request is not signed.")
        credential, signed_headers, signature = _parse_authorization(authorization)
        amz_date = headers.get("x-amz-date", "")
        payload = headers.get("x-amz-content-sha256", "")
        if not payload:
            raise SignatureError("InvalidRequest", "Missing required header x-amz-content-sha256.", 400)
        presigned = False
    matched = _CREDENTIAL.match(credential)
    if not matched:
        raise SignatureError("AuthorizationHeaderMalformed", "The credential scope is malformed.", 400)
    _require_host_signed(signed_headers)
    return SignedRequest(
        matched.group(1),
        matched.group(2),
        matched.group(3),
        amz_date,
        signed_headers,
        signature,
        payload,
        presigned,
    )


def _require_host_signed(signed_headers: list[str]) -> None:
    """SigV4 requires `host` among the signed headers, in the header and in a presigned URL alike: unsigned, a
    signature made for one endpoint is good for any other that shares the key (another Kilnbase, a proxy's
    upstream). AWS S3 refuses it before checking the signature, with this code and message."""
    if "host" not in signed_headers:
        raise SignatureError(
            "AccessDenied",
            "There were headers present in the request which were not signed",
            headers_not_signed="host",
        )


def _check_time(signed: SignedRequest, query: Mapping[str, str], now: datetime) -> None:
    try:
        moment = datetime.strptime(signed.amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    except ValueError:
        raise SignatureError("AccessDenied", "X-Amz-Date is missing or malformed.") from None
    if moment.strftime("%Y%m%d") != signed.date:
        raise SignatureError("SignatureDoesNotMatch", "The credential date does not match X-Amz-Date.")
    age = (now - moment).total_seconds()
    if signed.presigned:
        expires = query.get("X-Amz-Expires", "")
        if not is_whole_number(expires) or not 1 <= int(expires) <= MAX_PRESIGN_SECONDS:
            raise SignatureError(
                "AuthorizationQueryParametersError", "X-Amz-Expires must be 1 to 604800.", 400
            )
        if age > int(expires):
            raise SignatureError("AccessDenied", "Request has expired")
        if age < -CLOCK_SKEW_SECONDS:
            raise SignatureError("RequestTimeTooSkewed", "The request time is too far in the future.")
    elif abs(age) > CLOCK_SKEW_SECONDS:
        raise SignatureError(
            "RequestTimeTooSkewed", "The difference between the request time and now is too large."
        )


def verify(
    signed: SignedRequest,
    secret: str,
    *,
    method: str,
    raw_path: str,
    query: list[tuple[str, str]],
    headers: Mapping[str, str],
    now: datetime | None = None,
) -> bytes:
    """Check the signature (and the request's time); the signing key, for chunk signatures. `query` is the
    query string decoded once (`query_pairs`): decoding a value again would give `%2541` and `A` one
    canonical form, so a URL signed for one would be good for the other."""
    _check_time(signed, dict(query), now or datetime.now(UTC))
    pairs = sorted(
        (_uri_encode(name), _uri_encode(value))
        for name, value in query
        if not (signed.presigned and name == "X-Amz-Signature")
    )
    canonical_query = "&".join(f"{name}={value}" for name, value in pairs)
    lines = []
    for name in signed.signed_headers:
        value = headers.get(name)
        if value is None:
            raise SignatureError("SignatureDoesNotMatch", f"Signed header {name} is missing.")
        lines.append(f"{name}:{' '.join(value.split())}\n")
    canonical = "\n".join(
        [
            method,
            raw_path or "/",
            canonical_query,
            "".join(lines),
            ";".join(signed.signed_headers),
            signed.payload_hash,
        ]
    )
    string_to_sign = "\n".join(
        [ALGORITHM, signed.amz_date, signed.scope, hashlib.sha256(canonical.encode()).hexdigest()]
    )
    key = signing_key(secret, signed.date, signed.region)
    expected = hmac.new(key, string_to_sign.encode(), hashlib.sha256).hexdigest()
    if not same_digest(expected, signed.signature):
        raise SignatureError(
            "SignatureDoesNotMatch",
            "The request signature we calculated does not match the signature you provided.",
        )
    return key


def chunk_string_to_sign(signed: SignedRequest, previous: str, data_hash: str) -> str:
    return "\n".join(
        ["AWS4-HMAC-SHA256-PAYLOAD", signed.amz_date, signed.scope, previous, EMPTY_SHA256, data_hash]
    )


async def decode_aws_chunked(
    body: AsyncIterator[bytes],
    *,
    signed: SignedRequest | None,
    key: bytes | None,
    trailer_check: Callable[[dict[str, str], int], None] | None = None,
) -> AsyncIterator[bytes]:
    """The payload of an aws-chunked body, chunk signatures checked (signed streaming) as each chunk
    completes; the trailer's checksum handed to `trailer_check`."""
    buffer = bytearray()
    previous = signed.signature if signed is not None else ""
    crc = 0
    stream = aiter(body)
    ended = False

    async def fill(needed: int) -> bool:
        nonlocal ended
        while len(buffer) < needed and not ended:
            try:
                buffer.extend(await anext(stream))
            except StopAsyncIteration:
                ended = True
        return len(buffer) >= needed

    async def line() -> str:
        while True:
            index = buffer.find(b"\r\n")
            if index >= 0:
                text = bytes(buffer[:index]).decode("latin-1")
                del buffer[: index + 2]
                return text
            if len(buffer) > _MAX_CHUNK_HEADER or ended:
                raise SignatureError("IncompleteBody", "The aws-chunked body is malformed.", 400)
            await fill(len(buffer) + 1)

    while True:
        header = await line()
        size_text, _, extension = header.partition(";")
        if not _CHUNK_SIZE.fullmatch(size_text):
            raise SignatureError("IncompleteBody", "The aws-chunked body is malformed.", 400)
        size = int(size_text, 16)
        if size > MAX_CHUNK_BYTES:
            raise SignatureError("InvalidRequest", "An aws-chunked chunk is larger than 16 MiB.", 400)
        chunk_signature = extension.partition("chunk-signature=")[2] if extension else ""
        remaining = size
        digest = hashlib.sha256()
        pieces: list[bytes] = []
        while remaining:
            if not buffer and not await fill(1):
                raise SignatureError("IncompleteBody", "The body ended inside a chunk.", 400)
            take = bytes(buffer[:remaining])
            del buffer[: len(take)]
            remaining -= len(take)
            if signed is not None and key is not None:
                digest.update(take)
                pieces.append(take)  # held until the chunk's signature is checked
            else:
                crc = zlib.crc32(take, crc)
                yield take
        if signed is not None and key is not None:
            expected = hmac.new(
                key, chunk_string_to_sign(signed, previous, digest.hexdigest()).encode(), hashlib.sha256
            ).hexdigest()
            if not same_digest(expected, chunk_signature):
                raise SignatureError("SignatureDoesNotMatch", "A chunk signature does not match.")
            previous = expected
            for piece in pieces:
                crc = zlib.crc32(piece, crc)
                yield piece
        if size:
            if await line() != "":
                raise SignatureError("IncompleteBody", "The aws-chunked body is malformed.", 400)
            continue
        trailers: dict[str, str] = {}
        while True:
            text = await line() if (buffer or not ended) else ""
            if not text:
                break
            name, _, value = text.partition(":")
            trailers[name.strip().lower()] = value.strip()
        if trailer_check is not None:
            trailer_check(trailers, crc)
        return


def check_crc32_trailer(trailers: dict[str, str], crc: int) -> None:
    expected = trailers.get("x-amz-checksum-crc32")
    if expected is not None and base64.b64encode(crc.to_bytes(4, "big")).decode() != expected:
        raise SignatureError(
            "BadDigest", "The CRC32 you specified did not match the calculated checksum.", 400
        )
