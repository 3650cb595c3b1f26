"""The storage capability's MCP tools: the same `StorageService` calls as the HTTP routes, as the caller
(admin checks, RLS on objects and the service's audit apply). Names follow InsForge's MCP server where it
has the tool (`list-buckets`, `create-bucket`, `delete-bucket`)."""

from __future__ import annotations

import base64
import binascii
import mimetypes
from collections.abc import AsyncIterator, Mapping
from typing import Annotated, Any

from pydantic import Field

from kilnbase.capability import Tool
from kilnbase.http.errors import ApiError
from kilnbase.identity.actor import Actor
from kilnbase.storage.service import StorageService, bucket_deletion_reason, objects_deletion_reason
from kilnbase.storage.signed_urls import MAX_SECONDS, MIN_SECONDS
from kilnbase.storage.upload_body import open_upload

#: The most an upload through a tool may carry (the JSON-RPC body holds it whole; larger files go through
#: the upload routes).
MAX_TOOL_UPLOAD_BYTES = 4 * 1024 * 1024

Bucket = Annotated[str, Field(description="Bucket name", min_length=1, max_length=63)]
Key = Annotated[str, Field(description="Object key, e.g. images/cat.png", min_length=1, max_length=1024)]


def _payload(text: str | None, base64_data: str | None) -> bytes:
    if (text is None) == (base64_data is None):
        raise ApiError(
            400,
            "STORAGE_INVALID_PARAMETER",
            "Give exactly one of text and base64Data.",
            "Send text for text content, or base64Data for binary content, not both.",
        )
    if text is not None:
        data = text.encode()
    else:
        try:
            data = base64.b64decode(base64_data or "", validate=True)
        except (binascii.Error, ValueError):
            raise ApiError(
                400,
                "STORAGE_INVALID_PARAMETER",
                "base64Data is not valid base64.",
                "Encode the bytes as standard base64 (A-Z, a-z, 0-9, +, /, = padding).",
            ) from None
    if len(data) > MAX_TOOL_UPLOAD_BYTES:
        raise ApiError(
            413,
            "STORAGE_INVALID_PARAMETER",
            f"A tool upload carries at most {MAX_TOOL_UPLOAD_BYTES // (1024 * 1024)} MB.",
            "Upload larger files with PUT /api/storage/buckets/:bucketName/objects/:objectKey.",
        )
    return data


def _claimed_type(key: str, text: str | None, content_type: str | None) -> str | None:
    """The type to claim for an upload: the caller's, else, for `text`, the key's extension's or plain
    text. Text has no magic number to detect it by, so without a claim it was stored (and served) as
    application/octet-stream; the stored type is still decided from the bytes where they say more."""
    if content_type is not None or text is None:
        return content_type
    guessed, _encoding = mimetypes.guess_type(key)
    return guessed or "text/plain; charset=utf-8"


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data


#: The most a REST upload body held for approval may be: a file a tool may carry, and a form's other
#: fields and headers around it.
MAX_HELD_BODY_BYTES = MAX_TOOL_UPLOAD_BYTES + 128 * 1024


def held_upload_too_large(bucket: str, key: str) -> ApiError:
    """An agent's REST upload over an existing object that waits for approval, too large to be kept in a
    change request (which holds it as `upload-object`'s arguments)."""
    return ApiError(
        403,
        "FORBIDDEN",
        f'This upload replaces object "{key}" in bucket "{bucket}", which waits for a person\'s approval, '
        f"and an upload held for approval carries at most {MAX_TOOL_UPLOAD_BYTES // (1024 * 1024)} MB.",
        "Delete the object first (DELETE .../objects/<key> or delete-objects), which a person approves, "
        "then upload; or upload to a new key.",
    )


async def held_upload_arguments(
    bucket: str, key: str, body: bytes, content_type: str | None
) -> dict[str, Any]:
    """`upload-object`'s arguments for a REST upload's body (a multipart form's `file`, or the raw bytes),
    read whole: an agent's `PUT .../objects/<key>` over an object there is held as that tool's call."""
    received, chunks = await open_upload(_once(body), content_type, key.rsplit("/", 1)[-1])
    data = b"".join([chunk async for chunk in chunks])
    if len(data) > MAX_TOOL_UPLOAD_BYTES:
        raise held_upload_too_large(bucket, key)
    return {
        "bucketName": bucket,
        "key": key,
        "base64Data": base64.b64encode(data).decode(),
        "contentType": received.claimed_type,
    }


def storage_tools(service: StorageService) -> list[Tool]:
    async def list_buckets(actor: Actor) -> list[dict[str, Any]]:
        return await service.list_buckets(actor)

    async def create_bucket(actor: Actor, bucketName: Bucket, isPublic: bool = True) -> dict[str, Any]:
        await service.create_bucket(actor, bucketName, isPublic)
        return {"message": "Bucket created successfully", "bucket": bucketName, "public": isPublic}

    async def update_bucket(actor: Actor, bucketName: Bucket, isPublic: bool) -> dict[str, Any]:
        await service.update_bucket(actor, bucketName, isPublic)
        return {"message": "Bucket visibility updated", "bucket": bucketName, "public": isPublic}

    async def delete_bucket(actor: Actor, bucketName: Bucket) -> dict[str, Any]:
        await service.delete_bucket(actor, bucketName)
        return {"message": "Bucket deleted successfully", "bucket": bucketName}

    async def holds_objects(arguments: Mapping[str, Any]) -> str | None:
        bucket = str(arguments.get("bucketName", ""))
        count = await service.object_count(bucket)
        return bucket_deletion_reason(bucket, count) if count else None

    async def deletes_objects(arguments: Mapping[str, Any]) -> str | None:
        """Any deletion of a stored object by an agent waits for a person; a call that names only keys
        that do not exist deletes nothing and runs. No threshold (N objects or bytes per call): the door
        this closes is deleting every object one call at a time, each under any threshold, then the empty
        bucket (`delete-bucket` holds only a bucket with objects). A budget per key over time would need
        shared state and still lose the budget's worth. Objects have no undo (no versions, no trash), while
        uploading to new keys, listing and signing, an agent's usual storage work, run at once (replacing
        waits too: `replaces_object`); and one
        approval covers up to 1000 keys, so an agent asks once for a whole clean-up."""
        bucket, keys = str(arguments.get("bucketName", "")), arguments.get("keys")
        named = [key for key in keys if isinstance(key, str)] if isinstance(keys, list) else []
        count = await service.existing_objects(bucket, named) if named else 0
        return objects_deletion_reason(bucket, count) if count else None

    async def replaces_object(arguments: Mapping[str, Any]) -> str | None:
        """An agent's upload over an object already at the key waits for a person, as its deletion does:
        the old bytes are lost with no undo, exactly as by `delete-objects`. An upload to a new key runs
        at once. The same upload over REST (`PUT .../objects/<key>`) is held as this call; the paths whose
        bytes arrive where no approval can hold them (presigned and resumable uploads) are refused over an
        existing object (`StorageService.commit_row`)."""
        bucket, key = str(arguments.get("bucketName", "")), str(arguments.get("key", ""))
        if await service.existing_objects(bucket, [key]):
            return f"replaces object {key} in bucket {bucket}; its current bytes are lost"
        return None

    async def list_objects(
        actor: Actor,
        bucketName: Bucket,
        prefix: Annotated[str | None, Field(max_length=1024, description="Keys starting with this")] = None,
        search: Annotated[str | None, Field(max_length=200, description="Keys containing this")] = None,
        limit: Annotated[int, Field(ge=1, le=1000)] = 100,
        offset: Annotated[int, Field(ge=0, le=2**31 - 1)] = 0,
    ) -> dict[str, Any]:
        return await service.list_objects(
            actor.principal, bucketName, prefix=prefix, search=search, limit=limit, offset=offset
        )

    async def upload_object(
        actor: Actor,
        bucketName: Bucket,
        key: Key,
        text: Annotated[
            str | None, Field(max_length=MAX_TOOL_UPLOAD_BYTES, description="The content, as text")
        ] = None,
        base64Data: Annotated[
            str | None,
            Field(max_length=MAX_TOOL_UPLOAD_BYTES * 4 // 3 + 4, description="The content, base64-encoded"),
        ] = None,
        contentType: Annotated[
            str | None,
            Field(max_length=255, description="MIME type; when absent, detected, or from the key for text"),
        ] = None,
    ) -> dict[str, Any]:
        data = _payload(text, base64Data)
        claimed = _claimed_type(key, text, contentType)
        return await service.put_object(
            actor, bucketName, key, _once(data), claimed, filename=key.rsplit("/", 1)[-1], raw=True
        )

    async def get_signed_url(
        actor: Actor,
        bucketName: Bucket,
        key: Key,
        expiresIn: Annotated[
            int, Field(ge=MIN_SECONDS, le=MAX_SECONDS, description="Seconds the URL stays valid")
        ] = 3600,
    ) -> dict[str, Any]:
        return await service.download_strategy(actor.principal, bucketName, key, expiresIn)

    async def delete_objects(
        actor: Actor,
        bucketName: Bucket,
        keys: Annotated[list[Key], Field(min_length=1, max_length=1000)],
    ) -> dict[str, Any]:
        return {"results": await service.delete_objects(actor, bucketName, keys)}

    return [
        Tool("list-buckets", "List the storage buckets and whether each is public.", list_buckets),
        Tool("create-bucket", "Create a bucket (public unless isPublic is false).", create_bucket, False),
        Tool("update-bucket", "Make a bucket public or private.", update_bucket, False),
        Tool(
            "delete-bucket",
            "Delete a bucket and every object in it.",
            delete_bucket,
            read_only=False,
            needs_approval=holds_objects,
        ),
        Tool(
            "list-objects",
            "List a bucket's objects (key, size, type, URL), by prefix or search.",
            list_objects,
            needs_admin=False,
        ),
        Tool(
            "upload-object",
            "Create or replace an object from text or base64 (at most 4 MB).",
            upload_object,
            read_only=False,
            needs_admin=False,
            needs_approval=replaces_object,
        ),
        Tool(
            "get-signed-url",
            "A download URL for an object: plain for a public bucket, signed and expiring for a private one.",
            get_signed_url,
            needs_admin=False,
        ),
        Tool(
            "delete-objects",
            "Delete objects by key; one outcome (deleted or notFound) per key.",
            delete_objects,
            read_only=False,
            needs_admin=False,
            needs_approval=deletes_objects,
        ),
    ]
