"""The S3 protocol at `/storage/v1/s3`, path-style, on either backend, so boto3 and the aws CLI work
unchanged: ListBuckets, Head/Create/DeleteBucket, GetBucketLocation, ListObjectsV2 (prefix, delimiter,
continuation), Head/Get (Range)/Put/Copy/DeleteObject(s), multipart uploads (create, upload part,
complete, abort, list parts), presigned GET and PUT URLs, and S3's XML errors.

This is the HTTP edge of the S3 surface: it checks the SigV4 signature (`s3_signature`), decodes the body
(plain, or aws-chunked), maps the request to an operation and shapes S3's XML; `S3Objects` and
`StorageService` do the work, as the project's admin (an access key is a machine credential).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import logging
import secrets
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote
from xml.sax.saxutils import escape

import orjson
from starlette.requests import Request
from starlette.responses import Response

from kilnbase.http.errors import ApiError
from kilnbase.http.request_context import client_ip
from kilnbase.identity.actor import Actor
from kilnbase.identity.principal import CredentialKind, Principal
from kilnbase.storage import names
from kilnbase.storage import s3_signature as sigv4
from kilnbase.storage.downloads import object_response
from kilnbase.storage.s3_access_keys import S3AccessKeys
from kilnbase.storage.s3_objects import S3Error, S3Objects, no_such_bucket
from kilnbase.storage.service import StorageService, StoredObject
from kilnbase.storage.whole_numbers import is_whole_number

log = logging.getLogger("kilnbase.storage")

PREFIX = "/storage/v1/s3"
XML = "application/xml"
_NS = "http://s3.amazonaws.com/doc/2006-03-01/"
_MAX_XML_BODY = 2 * 1024 * 1024
_S3_PRINCIPAL = Principal(
    db_role="project_admin", kind=CredentialKind.API_KEY, claims={"role": "project_admin"}
)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def _xml(body: str, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        '<?xml version="1.0" encoding="UTF-8"?>\n' + body, status_code=status, media_type=XML, headers=headers
    )


def _error(
    code: str, message: str, status: int, resource: str = "", headers_not_signed: str = ""
) -> Response:
    request_id = secrets.token_hex(8).upper()
    not_signed = (
        f"<HeadersNotSigned>{escape(headers_not_signed)}</HeadersNotSigned>" if headers_not_signed else ""
    )
    body = (
        f"<Error><Code>{escape(code)}</Code><Message>{escape(message)}</Message>{not_signed}"
        f"<Resource>{escape(resource)}</Resource><RequestId>{request_id}</RequestId></Error>"
    )
    return _xml(body, status, {"x-amz-request-id": request_id})


def _api_error_to_s3(exc: ApiError) -> tuple[str, int]:
    if exc.status == 404:
        return ("NoSuchKey" if "bucket" not in exc.message.lower() else "NoSuchBucket"), 404
    if exc.status == 413:
        return "EntityTooLarge", 400
    if exc.status == 403:
        return "AccessDenied", 403
    if exc.status == 409:
        return "BucketAlreadyOwnedByYou", 409
    return ("InvalidBucketName" if "bucket name" in exc.message.lower() else "InvalidArgument"), 400


def _children(element: ET.Element, name: str) -> list[ET.Element]:
    return [child for child in element if child.tag.rsplit("}", 1)[-1] == name]


def _text(element: ET.Element, name: str) -> str:
    found = _children(element, name)
    return (found[0].text or "") if found else ""


async def _read_xml(request: Request) -> ET.Element:
    body = bytearray()
    async for chunk in request.stream():
        body.extend(chunk)
        if len(body) > _MAX_XML_BODY:
            raise S3Error("MalformedXML", "The XML body is too large.", 400)
    if b"<!doctype" in body.lower() or b"<!entity" in body.lower():
        raise S3Error("MalformedXML", "Document type declarations are not accepted.", 400)
    try:
        # No DTD can be declared (refused above), so no entity can expand: plain ElementTree is safe here.
        return ET.fromstring(bytes(body))  # noqa: S314
    except ET.ParseError:
        raise S3Error("MalformedXML", "The XML you provided was not well-formed.", 400) from None


class S3Gateway:
    def __init__(self, storage: StorageService, keys: S3AccessKeys, objects: S3Objects, region: str) -> None:
        self.storage = storage
        self.keys = keys
        self.objects = objects
        self.region = region

    # --- the edge ------------------------------------------------------------------------------------------

    async def handle(self, request: Request) -> Response:
        raw_path = (request.scope.get("raw_path") or request.scope["path"].encode()).decode("latin-1")
        resource = raw_path.removeprefix(PREFIX)
        try:
            query = sigv4.query_pairs(request.scope["query_string"])
            signed = sigv4.parse(request.method, request.headers, query)
            secret = await self.keys.secret_for(signed.access_key_id)
            if secret is None:
                raise sigv4.SignatureError(
                    "InvalidAccessKeyId", "The AWS Access Key Id you provided does not exist in our records."
                )
            key = sigv4.verify(
                signed, secret, method=request.method, raw_path=raw_path, query=query, headers=request.headers
            )
            await self.keys.mark_used(signed.access_key_id)
            # The client's address by the rule every other route follows (the peer, or the client a trusted
            # proxy names; None for a peer that is not an IP), never the socket's text as it stands: the audit
            # column is an `inet`, and behind a proxy the peer is the proxy.
            actor = Actor(
                _S3_PRINCIPAL,
                ip=client_ip(request),
                user_agent=request.headers.get("user-agent"),
                tool=f"s3:{signed.access_key_id}",
            )
            return await self._dispatch(request, actor, resource, dict(query), signed, key)
        except sigv4.SignatureError as exc:
            return _error(exc.code, exc.message, exc.status, resource, exc.headers_not_signed)
        except S3Error as exc:
            return _error(exc.code, exc.message, exc.status, resource)
        except ApiError as exc:
            code, status = _api_error_to_s3(exc)
            return _error(code, exc.message, status, resource)

    def _body(
        self, request: Request, signed: sigv4.SignedRequest, key: bytes
    ) -> tuple[AsyncIterator[bytes], Callable[[], None] | None]:
        """The payload as it arrives (aws-chunked decoded), and a check to run once it is all in."""
        payload = signed.payload_hash
        stream = request.stream()
        if payload in (sigv4.STREAMING_SIGNED, sigv4.STREAMING_SIGNED_TRAILER):
            return sigv4.decode_aws_chunked(
                stream, signed=signed, key=key, trailer_check=sigv4.check_crc32_trailer
            ), None
        if payload == sigv4.STREAMING_UNSIGNED_TRAILER:
            return sigv4.decode_aws_chunked(
                stream, signed=None, key=None, trailer_check=sigv4.check_crc32_trailer
            ), None
        if payload == sigv4.UNSIGNED:
            return stream, None
        digest = hashlib.sha256()

        async def hashed() -> AsyncIterator[bytes]:
            async for chunk in stream:
                digest.update(chunk)
                yield chunk

        def check() -> None:
            if not sigv4.same_digest(digest.hexdigest(), payload.lower()):
                raise S3Error(
                    "XAmzContentSHA256Mismatch",
                    "The provided 'x-amz-content-sha256' header does not match what was computed.",
                    400,
                )

        return hashed(), check

    async def _dispatch(
        self,
        request: Request,
        actor: Actor,
        resource: str,
        query: dict[str, str],
        signed: sigv4.SignedRequest,
        key: bytes,
    ) -> Response:
        bucket_part, _, key_part = resource.lstrip("/").partition("/")
        bucket = unquote(bucket_part)
        method = request.method
        if not bucket:
            if method == "GET":
                return await self.list_buckets(actor)
            raise S3Error(
                "MethodNotAllowed", "The specified method is not allowed against this resource.", 405
            )
        if not names.BUCKET_NAME.fullmatch(bucket):
            raise S3Error("InvalidBucketName", "The specified bucket is not valid.", 400)
        if not key_part:
            return await self._bucket_operation(request, actor, bucket, query)
        try:
            object_key = names.object_key(names.key_from_raw_path(b"/" + key_part.encode("latin-1"), b"/"))
        except ApiError as exc:
            raise S3Error("InvalidArgument", exc.message, 400) from None
        if method in ("GET", "HEAD"):
            if "uploadId" in query and method == "GET":
                return await self.list_parts(bucket, object_key, query)
            stored = await self.objects.head(actor, bucket, object_key)
            return object_response(request, stored, self.storage.read, private=True)
        if method == "PUT":
            if "partNumber" in query and "uploadId" in query:
                body, check = self._body(request, signed, key)
                number = query["partNumber"]
                if not is_whole_number(number):
                    raise S3Error(
                        "InvalidArgument", "Part number must be an integer between 1 and 10000.", 400
                    )
                etag = await self.objects.upload_part(
                    bucket, object_key, query["uploadId"], int(number), body, check
                )
                return Response(status_code=200, headers={"etag": f'"{etag}"'})
            source = request.headers.get("x-amz-copy-source")
            if source:
                return await self.copy_object(actor, bucket, object_key, source)
            body, check = self._body(request, signed, key)
            await self.objects.require_bucket(bucket)
            result = await self.storage.put_object(
                actor,
                bucket,
                object_key,
                body,
                request.headers.get("content-type"),
                raw=True,
                via="s3",
                verify=check,
                limit=self.objects.max_object_size,
            )
            etag = await self._etag_of(actor, bucket, result["key"])
            return Response(status_code=200, headers={"etag": f'"{etag}"'})
        if method == "DELETE":
            if "uploadId" in query:
                await self.objects.abort(bucket, object_key, query["uploadId"])
                return Response(status_code=204)
            await self.objects.require_bucket(bucket)
            await self.storage.delete_objects(actor, bucket, [object_key])
            return Response(status_code=204)
        if method == "POST":
            if "uploads" in query:
                upload_id = await self.objects.create_upload(
                    bucket, object_key, request.headers.get("content-type"), signed.access_key_id
                )
                return _xml(
                    f'<InitiateMultipartUploadResult xmlns="{_NS}"><Bucket>{escape(bucket)}</Bucket>'
                    f"<Key>{escape(object_key)}</Key><UploadId>{upload_id}</UploadId>"
                    "</InitiateMultipartUploadResult>"
                )
            if "uploadId" in query:
                return await self.complete_upload(request, actor, bucket, object_key, query["uploadId"])
        raise S3Error(
            "NotImplemented", "A header or query you provided implies functionality not implemented.", 501
        )

    async def _etag_of(self, actor: Actor, bucket: str, key: str) -> str:
        stored = await self.objects.head(actor, bucket, key)
        return stored.etag or ""

    # --- buckets -------------------------------------------------------------------------------------------

    async def list_buckets(self, actor: Actor) -> Response:
        buckets = await self.storage.list_buckets(actor)
        entries = "".join(
            f"<Bucket><Name>{escape(b['name'])}</Name><CreationDate>{b['createdAt']}</CreationDate></Bucket>"
            for b in buckets
        )
        return _xml(
            f'<ListAllMyBucketsResult xmlns="{_NS}"><Owner><ID>kilnbase</ID>'
            f"<DisplayName>kilnbase</DisplayName></Owner><Buckets>{entries}</Buckets></ListAllMyBucketsResult>"
        )

    async def _bucket_operation(
        self, request: Request, actor: Actor, bucket: str, query: dict[str, str]
    ) -> Response:
        method = request.method
        if method == "HEAD":
            await self.objects.require_bucket(bucket)
            return Response(status_code=200, headers={"x-amz-bucket-region": self.region})
        if method == "PUT":
            if await self.storage.bucket_is_public(bucket) is not None:
                raise S3Error(
                    "BucketAlreadyOwnedByYou",
                    "Your previous request to create the named bucket succeeded.",
                    409,
                )
            await self.storage.create_bucket(actor, bucket, False)
            return Response(status_code=200, headers={"location": f"/{bucket}"})
        if method == "DELETE":
            await self.objects.require_bucket(bucket)
            if not await self.objects.bucket_is_empty(bucket):
                raise S3Error("BucketNotEmpty", "The bucket you tried to delete is not empty.", 409)
            await self.storage.delete_bucket(actor, bucket)
            return Response(status_code=204)
        if method == "POST" and "delete" in query:
            return await self.delete_objects(request, actor, bucket)
        if method == "GET":
            if "location" in query:
                await self.objects.require_bucket(bucket)
                return _xml(f'<LocationConstraint xmlns="{_NS}">{escape(self.region)}</LocationConstraint>')
            if "uploads" in query or "versioning" in query or "cors" in query or "tagging" in query:
                raise S3Error("NotImplemented", "This bucket sub-resource is not implemented.", 501)
            return await self.list_objects(bucket, query)
        raise S3Error("MethodNotAllowed", "The specified method is not allowed against this resource.", 405)

    async def list_objects(self, bucket: str, query: dict[str, str]) -> Response:
        v2 = query.get("list-type") == "2"
        prefix = query.get("prefix", "")
        delimiter = query.get("delimiter", "")
        max_keys_text = query.get("max-keys", "1000")
        if not is_whole_number(max_keys_text):
            raise S3Error("InvalidArgument", "max-keys must be an integer from 0 to 1000.", 400)
        max_keys = min(int(max_keys_text), 1000)
        token = query.get("continuation-token")
        if v2:
            after = query.get("start-after", "")
            if token:
                decoded: object = None
                with contextlib.suppress(ValueError, KeyError, TypeError):
                    decoded = orjson.loads(base64.urlsafe_b64decode(token.encode()))["after"]
                if not isinstance(decoded, str):  # (a token is the client's to send: any JSON at all)
                    raise S3Error("InvalidArgument", "The continuation token provided is incorrect.", 400)
                after = decoded
        else:
            after = query.get("marker", "")
        if any("\x00" in text for text in (prefix, delimiter, after)):
            raise S3Error("InvalidArgument", "prefix, delimiter and markers cannot hold NUL.", 400)
        if max_keys == 0:
            await self.objects.require_bucket(bucket)
            listing_objects: list[dict[str, Any]] = []
            listing_prefixes: list[str] = []
            truncated, next_after = False, None
        else:
            listing = await self.objects.list_objects(
                bucket, prefix=prefix, delimiter=delimiter, after=after, max_keys=max_keys
            )
            listing_objects, listing_prefixes = listing.objects, listing.prefixes
            truncated, next_after = listing.truncated, listing.next_after
        contents = "".join(
            f"<Contents><Key>{escape(o['entry'])}</Key><LastModified>{_iso(o['uploaded_at'])}</LastModified>"
            f"<ETag>&quot;{escape(o['etag'] or '')}&quot;</ETag><Size>{int(o['size'])}</Size>"
            "<StorageClass>STANDARD</StorageClass></Contents>"
            for o in listing_objects
        )
        common = "".join(
            f"<CommonPrefixes><Prefix>{escape(p)}</Prefix></CommonPrefixes>" for p in listing_prefixes
        )
        parts = [
            f'<ListBucketResult xmlns="{_NS}"><Name>{escape(bucket)}</Name><Prefix>{escape(prefix)}</Prefix>',
            f"<MaxKeys>{max_keys}</MaxKeys>",
            f"<Delimiter>{escape(delimiter)}</Delimiter>" if delimiter else "",
            f"<IsTruncated>{'true' if truncated else 'false'}</IsTruncated>",
        ]
        if v2:
            parts.append(f"<KeyCount>{len(listing_objects) + len(listing_prefixes)}</KeyCount>")
            if token:
                parts.append(f"<ContinuationToken>{escape(token)}</ContinuationToken>")
            if truncated and next_after is not None:
                encoded = base64.urlsafe_b64encode(orjson.dumps({"after": next_after})).decode()
                parts.append(f"<NextContinuationToken>{encoded}</NextContinuationToken>")
            if "start-after" in query:
                parts.append(f"<StartAfter>{escape(query['start-after'])}</StartAfter>")
        else:
            parts.append(f"<Marker>{escape(after)}</Marker>")
            if truncated and next_after is not None and delimiter:
                parts.append(f"<NextMarker>{escape(next_after)}</NextMarker>")
        parts.append(contents + common + "</ListBucketResult>")
        return _xml("".join(parts))

    async def delete_objects(self, request: Request, actor: Actor, bucket: str) -> Response:
        await self.objects.require_bucket(bucket)
        root = await _read_xml(request)
        keys = [_text(entry, "Key") for entry in _children(root, "Object")]
        if not keys or len(keys) > 1000:
            raise S3Error("MalformedXML", "Send 1 to 1000 keys to delete.", 400)
        quiet = _text(root, "Quiet").lower() == "true"
        valid: list[str] = []
        errors = []
        for key in keys:
            try:
                valid.append(names.object_key(key))
            except ApiError as exc:
                errors.append(
                    f"<Error><Key>{escape(key)}</Key><Code>InvalidArgument</Code><Message>{escape(exc.message)}</Message></Error>"
                )
        if valid:
            await self.storage.delete_objects(actor, bucket, valid)
        deleted = "" if quiet else "".join(f"<Deleted><Key>{escape(k)}</Key></Deleted>" for k in valid)
        return _xml(f'<DeleteResult xmlns="{_NS}">{deleted}{"".join(errors)}</DeleteResult>')

    # --- objects -------------------------------------------------------------------------------------------

    async def copy_object(self, actor: Actor, bucket: str, key: str, source: str) -> Response:
        source_path = unquote(source.split("?", 1)[0]).lstrip("/")
        source_bucket, _, source_key = source_path.partition("/")
        if not source_bucket or not source_key:
            raise S3Error("InvalidArgument", "Copy Source must mention the source bucket and key.", 400)
        try:
            names.bucket_name(source_bucket)
            names.object_key(source_key)
        except ApiError as exc:
            raise S3Error("InvalidArgument", exc.message, 400) from None
        if await self.storage.bucket_is_public(source_bucket) is None:
            raise no_such_bucket(source_bucket)
        stored: StoredObject = await self.objects.copy(actor, source_bucket, source_key, bucket, key)
        return _xml(
            f'<CopyObjectResult xmlns="{_NS}"><LastModified>{_iso(stored.uploaded_at)}</LastModified>'
            f"<ETag>&quot;{stored.etag}&quot;</ETag></CopyObjectResult>"
        )

    async def complete_upload(
        self, request: Request, actor: Actor, bucket: str, key: str, upload_id: str
    ) -> Response:
        root = await _read_xml(request)
        chosen = []
        for part in _children(root, "Part"):
            number = _text(part, "PartNumber")
            if not is_whole_number(number):
                raise S3Error("MalformedXML", "The XML you provided was not well-formed.", 400)
            chosen.append((int(number), _text(part, "ETag")))
        stored = await self.objects.complete(actor, bucket, key, upload_id, chosen)
        return _xml(
            f'<CompleteMultipartUploadResult xmlns="{_NS}"><Location>{PREFIX}/{escape(bucket)}/{escape(key)}'
            f"</Location><Bucket>{escape(bucket)}</Bucket><Key>{escape(key)}</Key>"
            f"<ETag>&quot;{stored.etag}&quot;</ETag></CompleteMultipartUploadResult>"
        )

    async def list_parts(self, bucket: str, key: str, query: dict[str, str]) -> Response:
        parts = await self.objects.parts(bucket, key, query["uploadId"])
        marker_text = query.get("part-number-marker", "0")
        marker = int(marker_text) if is_whole_number(marker_text) else 0
        max_parts_text = query.get("max-parts", "1000")
        max_parts = min(int(max_parts_text), 1000) if is_whole_number(max_parts_text) else 1000
        after = [p for p in parts if p.number > marker]
        page = after[:max_parts]
        truncated = len(after) > max_parts
        entries = "".join(
            f"<Part><PartNumber>{p.number}</PartNumber><LastModified>{_iso(p.uploaded_at)}</LastModified>"
            f"<ETag>&quot;{p.etag}&quot;</ETag><Size>{p.size}</Size></Part>"
            for p in page
        )
        next_marker = (
            f"<NextPartNumberMarker>{page[-1].number}</NextPartNumberMarker>" if truncated and page else ""
        )
        return _xml(
            f'<ListPartsResult xmlns="{_NS}"><Bucket>{escape(bucket)}</Bucket><Key>{escape(key)}</Key>'
            f"<UploadId>{escape(query['uploadId'])}</UploadId><PartNumberMarker>{marker}</PartNumberMarker>"
            f"{next_marker}<MaxParts>{max_parts}</MaxParts><IsTruncated>{'true' if truncated else 'false'}"
            f"</IsTruncated>{entries}</ListPartsResult>"
        )
