"""HTTP edge of storage: InsForge's `/api/storage` routes, as `@insforge/sdk`'s `storage.from(bucket)` calls
them. Handlers parse the request and shape the answer; `StorageService` does the rest.

Object keys are read from the undecoded path (`names.key_from_raw_path`), so a key is what the client
percent-encoded, decoded once and strictly as UTF-8; the SDK encodes a whole key as one segment
(`encodeURIComponent`), REST clients may send its slashes as they are: both name the same object.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from email.utils import format_datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from kilnbase.capability import Capability
from kilnbase.http.admin_gate import admin_actor
from kilnbase.http.errors import ApiError
from kilnbase.http.json_body import FIX_FIELDS, parse, read_json, read_object
from kilnbase.http.query_params import int_param
from kilnbase.http.request_context import actor_of, principal_of, require_credential
from kilnbase.http.responses import json_response
from kilnbase.identity.agent_keys import AgentKeys
from kilnbase.identity.principal import ANONYMOUS, Principal
from kilnbase.storage import names
from kilnbase.storage.downloads import object_response
from kilnbase.storage.s3_gateway import PREFIX as S3_PREFIX
from kilnbase.storage.s3_gateway import S3Gateway
from kilnbase.storage.s3_objects import S3Objects
from kilnbase.storage.service import (
    FEATURE_GROUP,
    LIST_OBJECTS,
    StorageService,
    StoredObject,
    upload_not_found,
)
from kilnbase.storage.signed_urls import MAX_SECONDS
from kilnbase.storage.tools import storage_tools
from kilnbase.storage.transforms import Transform
from kilnbase.storage.tus import EXTENSIONS as TUS_EXTENSIONS
from kilnbase.storage.tus import VERSION as TUS_VERSION
from kilnbase.storage.tus import TusUploads

BUCKETS = "/api/storage/buckets"


class CreateBucket(BaseModel):
    model_config = ConfigDict(extra="ignore")
    bucketName: str = Field(min_length=1)
    isPublic: StrictBool = True


class UpdateBucket(BaseModel):
    model_config = ConfigDict(extra="ignore")
    isPublic: StrictBool


class UpdateConfig(BaseModel):
    model_config = ConfigDict(extra="ignore")
    maxFileSizeMb: StrictInt = Field(ge=1, le=200)


class DeleteObjects(BaseModel):
    model_config = ConfigDict(extra="ignore")
    keys: list[str] = Field(min_length=1, max_length=1000)


class UploadStrategy(BaseModel):
    model_config = ConfigDict(extra="ignore")
    filename: str = Field(min_length=1)
    contentType: str | None = None
    size: float | None = None


class ConfirmUpload(BaseModel):
    """`{size?, contentType?, etag?}` after a presigned upload; only the type is used (the store is asked for
    the size and etag)."""

    model_config = ConfigDict(extra="ignore")
    size: float | None = None
    contentType: str | None = None
    etag: str | None = None


def _storage_input(model: type[BaseModel], data: Any) -> Any:
    """InsForge answers storage's validation errors with STORAGE_INVALID_PARAMETER."""
    try:
        return parse(model, data)
    except ApiError as exc:
        raise names.invalid(exc.message, exc.next_actions or FIX_FIELDS) from None


def _object_key(request: Request, *, after: str = "/objects/", drop_suffix: str = "") -> str:
    bucket = request.path_params["bucket"]
    raw: bytes = request.scope.get("raw_path") or request.scope["path"].encode()
    prefix = f"{BUCKETS}/".encode()
    rest = raw[len(prefix) :] if raw.startswith(prefix) else raw
    _, _, rest = rest.partition(b"/")  # past the bucket's segment
    key = names.key_from_raw_path(b"/" + rest, after.encode())
    if drop_suffix:
        key = key.removesuffix(drop_suffix)
    if not bucket:
        raise names.invalid(
            "Bucket name is required", f"Put the bucket's name in the path: {BUCKETS}/<bucket>/..."
        )
    return names.object_key(key)


def _reader(request: Request) -> tuple[Principal | None, ApiError | None]:
    """The caller for a download, None when there is none valid, and then the refusal of the credential
    presented, if one was: a public bucket ignores it, a private one answers with it (InsForge's
    `verifyUser`, which guards only a private bucket's downloads)."""
    try:
        principal = principal_of(request)
    except ApiError as refused:
        return None, refused
    return (None if principal is ANONYMOUS else principal), None


class StorageRoutes:
    def __init__(self, service: StorageService) -> None:
        self.service = service

    # --- configuration and buckets -------------------------------------------------------------------------

    async def get_config(self, request: Request) -> Response:
        return _json(await self.service.get_config(admin_actor(request)))

    async def put_config(self, request: Request) -> Response:
        actor = admin_actor(request)
        body: UpdateConfig = _storage_input(UpdateConfig, await read_json(request))
        return _json(await self.service.update_config(actor, body.maxFileSizeMb))

    async def list_buckets(self, request: Request) -> Response:
        return _json(await self.service.list_buckets(admin_actor(request)))

    async def create_bucket(self, request: Request) -> Response:
        actor = admin_actor(request)
        body: CreateBucket = _storage_input(CreateBucket, await read_json(request))
        await self.service.create_bucket(actor, body.bucketName, body.isPublic)
        access = (
            "This is a PUBLIC bucket - objects can be accessed without authentication."
            if body.isPublic
            else "This is a PRIVATE bucket - authentication is required to access objects."
        )
        return _json(
            {
                "message": "Bucket created successfully",
                "bucketName": body.bucketName,
                "isPublic": body.isPublic,
                "nextActions": f"{access} You can use /api/storage/buckets/:bucketName/objects/:objectKey to "
                "upload an object to the bucket, and /api/storage/buckets/:bucketName/objects to list the "
                "objects in the bucket.",
            },
            201,
        )

    async def update_bucket(self, request: Request) -> Response:
        actor = admin_actor(request)
        bucket = request.path_params["bucket"]
        body: UpdateBucket = _storage_input(UpdateBucket, await read_json(request))
        await self.service.update_bucket(actor, bucket, body.isPublic)
        access = (
            "Bucket is now PUBLIC - objects can be accessed without authentication."
            if body.isPublic
            else "Bucket is now PRIVATE - authentication is required to access objects."
        )
        return _json(
            {
                "message": "Bucket visibility updated",
                "bucket": bucket,
                "isPublic": body.isPublic,
                "nextActions": access,
            }
        )

    async def delete_bucket(self, request: Request) -> Response:
        await self.service.delete_bucket(admin_actor(request), request.path_params["bucket"])
        return _json(
            {
                "message": "Bucket deleted successfully",
                "nextActions": "You can use POST /api/storage/buckets to create a new bucket, and GET "
                "/api/storage/buckets/:bucketName/objects to list the objects in the bucket.",
            }
        )

    # --- objects -------------------------------------------------------------------------------------------

    async def list_objects(self, request: Request) -> Response:
        principal = require_credential(request)
        query = request.query_params
        result = await self.service.list_objects(
            principal,
            request.path_params["bucket"],
            prefix=query.get("prefix") or None,
            search=query.get("search") or None,
            limit=int_param(request, "limit", 100, 1, 1000),
            offset=int_param(request, "offset", 0, 0, 2**31 - 1),
        )
        return _json(result)

    async def _upload(self, request: Request, key: str | None) -> dict[str, Any]:
        """PUT creates or replaces the object at `key` (InsForge's contract, S3's PutObject); POST creates
        one at a generated key and never replaces."""
        actor = actor_of(request, require_credential(request))
        body: AsyncIterator[bytes] = request.stream()
        return await self.service.put_object(
            actor,
            request.path_params["bucket"],
            key,
            body,
            request.headers.get("content-type"),
            filename=request.query_params.get("filename") or "file",
            replace=key is not None,
        )

    async def put_object(self, request: Request) -> Response:
        key = _object_key(request)
        return _json(await self._upload(request, key))

    async def post_object(self, request: Request) -> Response:
        return _json(await self._upload(request, None), 201)

    async def get_object(self, request: Request) -> Response:
        bucket = request.path_params["bucket"]
        key = _object_key(request)
        query = request.query_params
        if "signature" in query or "expires" in query:
            stored = await self.service.object_by_signature(
                bucket, key, query.get("expires", ""), query.get("signature", "")
            )
            if Transform.wanted(query):
                return await self._transformed(request, stored, Transform.parse(query), private=True)
            return object_response(request, stored, self.service.read, private=True)
        reader, refused = _reader(request)
        stored = await self.service.visible_object(reader, bucket, key, refused=refused)
        public = bool(await self.service.bucket_is_public(bucket))
        if Transform.wanted(query):
            return await self._transformed(request, stored, Transform.parse(query), private=not public)
        redirect = await self.service.download_redirect(stored, MAX_SECONDS if public else 3600)
        if redirect is not None:
            return RedirectResponse(redirect, status_code=302, headers={"cache-control": "no-store"})
        return object_response(request, stored, self.service.read, private=not public)

    async def _transformed(
        self, request: Request, stored: StoredObject, transform: Transform, *, private: bool
    ) -> Response:
        body, content_type, etag = await self.service.transformed(stored, transform)
        headers = {"etag": etag, "x-content-type-options": "nosniff", "vary": "Accept"}
        if private:
            headers["cache-control"] = "private, no-store"
        if request.headers.get("if-none-match") == etag:
            return Response(status_code=304, headers=headers)
        return Response(body, media_type=content_type, headers=headers)

    async def delete_object(self, request: Request) -> Response:
        actor = actor_of(request, require_credential(request))
        key = _object_key(request)
        results = await self.service.delete_objects(actor, request.path_params["bucket"], [key])
        if results[0]["status"] != "deleted":
            raise ApiError(404, "STORAGE_NOT_FOUND", "Object not found", LIST_OBJECTS)
        return _json({"message": "Object deleted successfully"})

    async def delete_objects(self, request: Request) -> Response:
        actor = actor_of(request, require_credential(request))
        body: DeleteObjects = _storage_input(DeleteObjects, await read_json(request))
        results = await self.service.delete_objects(actor, request.path_params["bucket"], body.keys)
        return _json({"results": results})

    # --- strategies ----------------------------------------------------------------------------------------

    async def upload_strategy(self, request: Request) -> Response:
        actor = actor_of(request, require_credential(request))
        body: UploadStrategy = _storage_input(UploadStrategy, await read_json(request, optional=True))
        bucket = request.path_params["bucket"]
        return _json(await self.service.upload_strategy(actor, bucket, body.filename, body.contentType))

    async def _download_strategy(self, request: Request, key: str, expires_in: Any) -> Response:
        seconds: float | None = None
        if expires_in is not None and expires_in != "":
            try:
                seconds = float(expires_in)
            except (TypeError, ValueError):
                seconds = float("nan")
            if seconds != seconds or seconds in (float("inf"), float("-inf")):
                raise names.invalid(
                    "expiresIn must be a finite number of seconds",
                    f"Send expiresIn in seconds (at most {MAX_SECONDS}), or leave it out for the default.",
                )
        reader, refused = _reader(request)
        strategy = await self.service.download_strategy(
            reader, request.path_params["bucket"], key, seconds, refused=refused
        )
        return _json(strategy, headers={"cache-control": "no-store"})

    async def download_strategy(self, request: Request) -> Response:
        key = _object_key(request, after="/download-strategy/objects/")
        return await self._download_strategy(request, key, request.query_params.get("expiresIn"))

    async def post_object_action(self, request: Request) -> Response:
        """POST `.../objects/<key>/confirm-upload`, and the deprecated `.../<key>/download-strategy`."""
        raw_path: bytes = request.scope.get("raw_path") or request.scope["path"].encode()
        if raw_path.endswith(b"/confirm-upload"):
            actor = actor_of(request, require_credential(request))
            key = _object_key(request, drop_suffix="/confirm-upload")
            confirm: ConfirmUpload = _storage_input(ConfirmUpload, await read_object(request))
            bucket = request.path_params["bucket"]
            return _json(await self.service.confirm_upload(actor, bucket, key, confirm.contentType))
        if raw_path.endswith(b"/download-strategy"):
            key = _object_key(request, drop_suffix="/download-strategy")
            body = await read_object(request)
            expires_in = request.query_params.get("expiresIn", body.get("expiresIn"))
            return await self._download_strategy(request, key, expires_in)
        raise ApiError(
            404,
            "NOT_FOUND",
            f"Route POST {request.url.path} not found",
            "Upload with PUT .../objects/<key> or POST .../objects (generated key).",
        )

    def routes(self) -> list[BaseRoute]:
        objects = f"{BUCKETS}/{{bucket}}/objects"
        return [
            Route("/api/storage/config", self.get_config, methods=["GET"]),
            Route("/api/storage/config", self.put_config, methods=["PUT"]),
            Route(BUCKETS, self.list_buckets, methods=["GET"]),
            Route(BUCKETS, self.create_bucket, methods=["POST"]),
            Route(f"{BUCKETS}/{{bucket}}", self.update_bucket, methods=["PATCH"]),
            Route(f"{BUCKETS}/{{bucket}}", self.delete_bucket, methods=["DELETE"]),
            Route(f"{BUCKETS}/{{bucket}}/upload-strategy", self.upload_strategy, methods=["POST"]),
            Route(
                f"{BUCKETS}/{{bucket}}/download-strategy/objects/{{key:path}}",
                self.download_strategy,
                methods=["GET"],
            ),
            Route(objects, self.list_objects, methods=["GET"]),
            Route(objects, self.post_object, methods=["POST"]),
            Route(objects, self.delete_objects, methods=["DELETE"]),
            Route(f"{objects}/{{key:path}}", self.get_object, methods=["GET", "HEAD"]),
            Route(f"{objects}/{{key:path}}", self.put_object, methods=["PUT"]),
            Route(f"{objects}/{{key:path}}", self.delete_object, methods=["DELETE"]),
            Route(f"{objects}/{{key:path}}", self.post_object_action, methods=["POST"]),
        ]


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return json_response(body, status, headers)


class S3Routes:
    """The S3 protocol endpoint, its access keys and its configuration (admin)."""

    def __init__(self, service: StorageService) -> None:
        self.service = service
        objects = S3Objects(service, service.settings.storage.s3_max_object_size)
        self.region = service.settings.storage.s3_region
        self.gateway = S3Gateway(service, service.s3_keys, objects, self.region)

    async def config(self, request: Request) -> Response:
        admin_actor(request)
        base = self.service.base_url
        return _json({"endpoint": f"{base}{S3_PREFIX}", "region": self.region, "available": True})

    async def create_key(self, request: Request) -> Response:
        actor = admin_actor(request)
        body: CreateAccessKey = _storage_input(CreateAccessKey, await read_json(request, optional=True))
        return _json(await self.service.s3_keys.create(actor, body.description), 201)

    async def list_keys(self, request: Request) -> Response:
        return _json(await self.service.s3_keys.list(admin_actor(request)))

    async def delete_key(self, request: Request) -> Response:
        await self.service.s3_keys.delete(admin_actor(request), request.path_params["id"])
        return Response(status_code=204)

    def routes(self) -> list[BaseRoute]:
        every = ["GET", "HEAD", "PUT", "POST", "DELETE"]
        return [
            Route("/api/storage/s3/config", self.config, methods=["GET"]),
            Route("/api/storage/s3/access-keys", self.create_key, methods=["POST"]),
            Route("/api/storage/s3/access-keys", self.list_keys, methods=["GET"]),
            Route("/api/storage/s3/access-keys/{id}", self.delete_key, methods=["DELETE"]),
            Route(S3_PREFIX, self.gateway.handle, methods=every),
            Route(f"{S3_PREFIX}/{{path:path}}", self.gateway.handle, methods=every),
        ]


class TusRoutes:
    """TUS 1.0 resumable uploads (`tus.py`): creation, offset, append, termination, expiration."""

    def __init__(self, uploads: TusUploads) -> None:
        self.uploads = uploads

    @staticmethod
    def _headers(extra: dict[str, str] | None = None) -> dict[str, str]:
        return {"Tus-Resumable": TUS_VERSION, "Cache-Control": "no-store", **(extra or {})}

    def _check_version(self, request: Request) -> None:
        if request.headers.get("tus-resumable") != TUS_VERSION:
            raise ApiError(
                412,
                "STORAGE_INVALID_PARAMETER",
                f"Send Tus-Resumable: {TUS_VERSION}.",
                f"Add the header Tus-Resumable: {TUS_VERSION} to every TUS request but OPTIONS.",
            )

    @staticmethod
    def _upload_id(request: Request) -> uuid.UUID:
        try:
            return uuid.UUID(request.path_params["upload"])
        except ValueError:
            raise upload_not_found() from None

    async def options(self, request: Request) -> Response:
        limit = await self.uploads.storage.max_file_bytes()
        return Response(
            status_code=204,
            headers={
                "Tus-Resumable": TUS_VERSION,
                "Tus-Version": TUS_VERSION,
                "Tus-Extension": TUS_EXTENSIONS,
                "Tus-Max-Size": str(limit),
            },
        )

    async def create(self, request: Request) -> Response:
        self._check_version(request)
        actor = actor_of(request, require_credential(request))
        bucket = request.path_params["bucket"]
        upload_id, expires = await self.uploads.create(
            actor, bucket, request.headers.get("upload-length"), request.headers.get("upload-metadata")
        )
        location = f"{BUCKETS}/{bucket}/tus/{upload_id}"
        expiry = format_datetime(expires, usegmt=True)
        return Response(
            status_code=201, headers=self._headers({"Location": location, "Upload-Expires": expiry})
        )

    async def head(self, request: Request) -> Response:
        self._check_version(request)
        actor = actor_of(request, require_credential(request))
        status = await self.uploads.status(actor, request.path_params["bucket"], self._upload_id(request))
        return Response(status_code=200, headers=self._headers(status))

    async def patch(self, request: Request) -> Response:
        self._check_version(request)
        actor = actor_of(request, require_credential(request))
        if request.headers.get("content-type") != "application/offset+octet-stream":
            raise ApiError(
                415,
                "STORAGE_INVALID_PARAMETER",
                "Send Content-Type: application/offset+octet-stream.",
                "Send the PATCH body as raw bytes with that Content-Type, from the offset HEAD reports.",
            )
        headers, _stored = await self.uploads.append(
            actor,
            request.path_params["bucket"],
            self._upload_id(request),
            request.headers.get("upload-offset"),
            request.stream(),
        )
        return Response(status_code=204, headers=self._headers(headers))

    async def delete(self, request: Request) -> Response:
        self._check_version(request)
        actor = actor_of(request, require_credential(request))
        bucket = request.path_params["bucket"]
        upload_id = self._upload_id(request)
        await self.uploads.status(actor, bucket, upload_id, finish=False)  # the caller's, or 404
        await self.uploads.terminate(actor, bucket, upload_id)
        return Response(status_code=204, headers=self._headers())

    def routes(self) -> list[BaseRoute]:
        base = f"{BUCKETS}/{{bucket}}/tus"
        return [
            Route(base, self.options, methods=["OPTIONS"]),
            Route(base, self.create, methods=["POST"]),
            Route(f"{base}/{{upload}}", self.options, methods=["OPTIONS"]),
            Route(f"{base}/{{upload}}", self.head, methods=["HEAD"]),
            Route(f"{base}/{{upload}}", self.patch, methods=["PATCH"]),
            Route(f"{base}/{{upload}}", self.delete, methods=["DELETE"]),
        ]


class CreateAccessKey(BaseModel):
    model_config = ConfigDict(extra="ignore")
    description: str | None = Field(default=None, max_length=256)


def capability(service: StorageService, agent_keys: AgentKeys) -> Capability:
    tus = TusUploads(service, service.tus_dir, agent_keys)

    @contextlib.asynccontextmanager
    async def lifespan() -> AsyncIterator[None]:
        await service.start()
        await tus.start()
        try:
            yield
        finally:
            await service.stop()

    return Capability(
        FEATURE_GROUP,
        [*TusRoutes(tus).routes(), *StorageRoutes(service).routes(), *S3Routes(service).routes()],
        lifespan=lifespan,
        tools=storage_tools(service),
        body_limits={f"{BUCKETS}/": "upload", S3_PREFIX: "upload"},
    )
