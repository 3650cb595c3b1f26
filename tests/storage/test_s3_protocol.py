"""The S3 protocol endpoint driven by boto3, unchanged, against `kilnbase serve`: access keys from the admin
API, buckets, objects, listing with delimiters and continuation, copies, batch deletes, multipart uploads,
presigned GET and PUT URLs, S3's XML errors; on the local backend and on an S3 backend (SeaweedFS)."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import httpx
import psycopg
import pytest
from botocore.auth import S3SigV4Auth, S3SigV4QueryAuth
from botocore.awsrequest import AWSRequest, HTTPHeaders
from botocore.client import Config
from botocore.exceptions import ClientError

from tests.support.postgres import TestCluster
from tests.support.seaweed import ACCESS_KEY, REGION, SECRET_KEY, SeaweedS3
from tests.support.servers import ServerProcess

MiB = 1024 * 1024


def _serve(cluster: TestCluster, data_dir: Path, env: dict[str, str] | None = None) -> ServerProcess:
    server = ServerProcess(
        data_dir,
        env={
            "DATABASE_URL": cluster.create_database("s3proto"),
            "MAX_FILE_SIZE": str(64 * MiB),
            **(env or {}),
        },
    )
    server.start()
    return server


def _client(server: ServerProcess) -> Any:
    api_key = json.loads((server.data_dir / "keys.json").read_text())["api_key"]
    created = httpx.post(
        f"{server.url}/api/storage/s3/access-keys",
        json={"description": "tests"},
        headers={"Authorization": f"Bearer {api_key}"},
    )
    assert created.status_code == 201, created.text
    key = created.json()
    return _boto(server, key["accessKeyId"], key["secretAccessKey"])


def _boto(server: ServerProcess, access_key_id: str, secret: str) -> Any:
    """boto3's S3 client for the server's endpoint, signing with this key and secret."""
    return boto3.client(
        "s3",
        endpoint_url=f"{server.url}/storage/v1/s3",
        aws_access_key_id=access_key_id,
        aws_secret_access_key=secret,
        region_name="us-east-2",
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
    )


@pytest.fixture(scope="module")
def local_server(cluster: TestCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = _serve(cluster, tmp_path_factory.mktemp("s3local") / "data")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def s3(local_server: ServerProcess) -> Any:
    return _client(local_server)


def _bucket(s3: Any) -> str:
    name = f"proto-{secrets.token_hex(4)}"
    s3.create_bucket(Bucket=name)
    return name


def test_access_keys_admin_api(local_server: ServerProcess) -> None:
    api_key = json.loads((local_server.data_dir / "keys.json").read_text())["api_key"]
    admin = {"Authorization": f"Bearer {api_key}"}
    config = httpx.get(f"{local_server.url}/api/storage/s3/config", headers=admin).json()
    assert config == {
        "endpoint": f"{local_server.url}/storage/v1/s3",
        "region": "us-east-2",
        "available": True,
    }
    created = httpx.post(f"{local_server.url}/api/storage/s3/access-keys", json={}, headers=admin).json()
    assert set(created) == {"id", "accessKeyId", "secretAccessKey", "description", "createdAt", "lastUsedAt"}
    listed = httpx.get(f"{local_server.url}/api/storage/s3/access-keys", headers=admin).json()
    assert created["accessKeyId"] in [k["accessKeyId"] for k in listed]
    assert all("secretAccessKey" not in k for k in listed)
    gone = httpx.delete(f"{local_server.url}/api/storage/s3/access-keys/{created['id']}", headers=admin)
    assert gone.status_code == 204
    revoked = _boto(local_server, created["accessKeyId"], created["secretAccessKey"])
    with pytest.raises(ClientError) as refused:
        revoked.list_buckets()
    assert refused.value.response["Error"]["Code"] == "InvalidAccessKeyId"
    assert httpx.get(f"{local_server.url}/api/storage/s3/access-keys").status_code == 401


def test_bad_signatures_refused(local_server: ServerProcess, s3: Any) -> None:
    creds = s3._request_signer._credentials
    wrong = _boto(local_server, creds.access_key, creds.secret_key + "x")
    with pytest.raises(ClientError) as refused:
        wrong.list_buckets()
    assert refused.value.response["Error"]["Code"] == "SignatureDoesNotMatch"
    unsigned = httpx.get(f"{local_server.url}/storage/v1/s3/")
    assert unsigned.status_code == 403 and b"<Code>AccessDenied</Code>" in unsigned.content


class _HostUnsignedAuth(S3SigV4Auth):  # type: ignore[misc]  # (botocore has no types)
    """botocore's own SigV4 signer, leaving `host` out of the signed headers (the request still sends it)."""

    def headers_to_sign(self, request: AWSRequest) -> HTTPHeaders:
        headers = super().headers_to_sign(request)
        del headers["host"]
        return headers


class _HostUnsignedQueryAuth(S3SigV4QueryAuth):  # type: ignore[misc]
    def headers_to_sign(self, request: AWSRequest) -> HTTPHeaders:
        headers = super().headers_to_sign(request)
        del headers["host"]
        return headers


def _hand_signed(
    s3: Any, auth: type[S3SigV4Auth], method: str, url: str, body: bytes = b""
) -> httpx.Response:
    """The request signed by `auth` with the client's key, sent as signed."""
    request = AWSRequest(method=method, url=url, data=body)
    auth(s3._request_signer._credentials, "s3", "us-east-2").add_auth(request)
    headers = {name: value for name, value in request.headers.items() if name.lower() != "host"}
    return httpx.request(method, request.url, headers=headers, content=body)


def test_a_signature_that_does_not_sign_host_is_refused_and_changes_nothing(
    local_server: ServerProcess, s3: Any
) -> None:
    """SigV4 requires `host` among the signed headers; AWS S3 answers AccessDenied and names it. The same
    request with host signed (the signer boto3 uses) goes through, so the refusal is about host alone."""
    bucket = _bucket(s3)
    url = f"{local_server.url}/storage/v1/s3/{bucket}/unsigned-host.txt"
    refused = _hand_signed(s3, _HostUnsignedAuth, "PUT", url, b"written?")
    assert refused.status_code == 403, refused.text
    assert b"<Code>AccessDenied</Code>" in refused.content
    assert b"There were headers present in the request which were not signed" in refused.content
    assert b"<HeadersNotSigned>host</HeadersNotSigned>" in refused.content
    with pytest.raises(ClientError) as missing:
        s3.head_object(Bucket=bucket, Key="unsigned-host.txt")
    assert missing.value.response["Error"]["Code"] == "404"
    accepted = _hand_signed(s3, S3SigV4Auth, "PUT", url, b"written")
    assert accepted.status_code == 200, accepted.text
    assert s3.get_object(Bucket=bucket, Key="unsigned-host.txt")["Body"].read() == b"written"


def test_a_presigned_url_that_does_not_sign_host_is_refused(local_server: ServerProcess, s3: Any) -> None:
    bucket = _bucket(s3)
    s3.put_object(Bucket=bucket, Key="k", Body=b"secret")
    url = f"{local_server.url}/storage/v1/s3/{bucket}/k"
    request = AWSRequest(method="GET", url=url)
    _HostUnsignedQueryAuth(s3._request_signer._credentials, "s3", "us-east-2", expires=60).add_auth(request)
    assert "X-Amz-SignedHeaders=&" in request.url
    refused = httpx.get(request.url)
    assert refused.status_code == 403 and b"<HeadersNotSigned>host</HeadersNotSigned>" in refused.content
    assert b"secret" not in refused.content
    signed = AWSRequest(method="GET", url=url)
    S3SigV4QueryAuth(s3._request_signer._credentials, "s3", "us-east-2", expires=60).add_auth(signed)
    assert httpx.get(signed.url).content == b"secret"


def test_a_request_that_fails_its_signature_does_not_mark_the_key_used(local_server: ServerProcess) -> None:
    """`lastUsedAt` says when a key was last used: a request anyone can send with a key's id (it is in every
    presigned URL) and a wrong secret set it too, hiding whether the key is in use."""
    api_key = json.loads((local_server.data_dir / "keys.json").read_text())["api_key"]
    admin = {"Authorization": f"Bearer {api_key}"}
    keys = f"{local_server.url}/api/storage/s3/access-keys"
    created = httpx.post(keys, json={}, headers=admin).json()
    forged = _boto(local_server, created["accessKeyId"], "not-the-secret")
    with pytest.raises(ClientError):
        forged.list_buckets()

    def last_used() -> object:
        listed = httpx.get(keys, headers=admin).json()
        return next(k["lastUsedAt"] for k in listed if k["accessKeyId"] == created["accessKeyId"])

    assert last_used() is None
    _boto(local_server, created["accessKeyId"], created["secretAccessKey"]).list_buckets()
    assert last_used() is not None


def test_objects_round_trip(s3: Any) -> None:
    bucket = _bucket(s3)
    assert bucket in [b["Name"] for b in s3.list_buckets()["Buckets"]]
    s3.head_bucket(Bucket=bucket)
    body = secrets.token_bytes(200_000)
    put = s3.put_object(Bucket=bucket, Key="dir/a b+c.bin", Body=body, ContentType="application/x-test")
    assert put["ETag"] == f'"{hashlib.md5(body, usedforsecurity=False).hexdigest()}"'
    got = s3.get_object(Bucket=bucket, Key="dir/a b+c.bin")
    assert got["Body"].read() == body and got["ContentLength"] == len(body)
    ranged = s3.get_object(Bucket=bucket, Key="dir/a b+c.bin", Range="bytes=10-19")
    assert ranged["Body"].read() == body[10:20] and ranged["ContentRange"] == f"bytes 10-19/{len(body)}"
    head = s3.head_object(Bucket=bucket, Key="dir/a b+c.bin")
    assert head["ContentLength"] == len(body) and head["ContentType"] == "application/x-test"
    s3.copy_object(Bucket=bucket, Key="copy.bin", CopySource={"Bucket": bucket, "Key": "dir/a b+c.bin"})
    assert s3.get_object(Bucket=bucket, Key="copy.bin")["Body"].read() == body
    with pytest.raises(ClientError) as missing:
        s3.get_object(Bucket=bucket, Key="nope")
    assert missing.value.response["Error"]["Code"] == "NoSuchKey"
    with pytest.raises(ClientError) as not_empty:
        s3.delete_bucket(Bucket=bucket)
    assert not_empty.value.response["Error"]["Code"] == "BucketNotEmpty"
    deleted = s3.delete_objects(
        Bucket=bucket, Delete={"Objects": [{"Key": "dir/a b+c.bin"}, {"Key": "copy.bin"}]}
    )
    assert sorted(d["Key"] for d in deleted["Deleted"]) == ["copy.bin", "dir/a b+c.bin"]
    s3.delete_object(Bucket=bucket, Key="already-gone")
    s3.delete_bucket(Bucket=bucket)
    with pytest.raises(ClientError) as gone:
        s3.head_bucket(Bucket=bucket)
    assert gone.value.response["Error"]["Code"] in ("404", "NoSuchBucket")


def test_listing_with_delimiter_and_continuation(s3: Any) -> None:
    bucket = _bucket(s3)
    keys = ["a/1", "a/2", "b/1", "c", "d/x/1", "e"]
    for key in keys:
        s3.put_object(Bucket=bucket, Key=key, Body=b"1")
    flat = s3.list_objects_v2(Bucket=bucket)
    assert [o["Key"] for o in flat["Contents"]] == keys and flat["KeyCount"] == 6
    top = s3.list_objects_v2(Bucket=bucket, Delimiter="/")
    assert [o["Key"] for o in top["Contents"]] == ["c", "e"]
    assert [p["Prefix"] for p in top["CommonPrefixes"]] == ["a/", "b/", "d/"]
    seen: list[str] = []
    token = None
    while True:
        kwargs: dict[str, Any] = {"Bucket": bucket, "Delimiter": "/", "MaxKeys": 2}
        if token:
            kwargs["ContinuationToken"] = token
        page = s3.list_objects_v2(**kwargs)
        seen += [o["Key"] for o in page.get("Contents", [])] + [
            p["Prefix"] for p in page.get("CommonPrefixes", [])
        ]
        if not page["IsTruncated"]:
            break
        token = page["NextContinuationToken"]
    assert sorted(seen) == ["a/", "b/", "c", "d/", "e"]
    paginator = s3.get_paginator("list_objects_v2")
    everything = [
        o["Key"]
        for page in paginator.paginate(Bucket=bucket, Prefix="a/", PaginationConfig={"PageSize": 1})
        for o in page["Contents"]
    ]
    assert everything == ["a/1", "a/2"]


def test_multipart_upload(s3: Any) -> None:
    bucket = _bucket(s3)
    parts_data = [secrets.token_bytes(5 * MiB), secrets.token_bytes(1234)]
    created = s3.create_multipart_upload(Bucket=bucket, Key="big.bin", ContentType="application/x-big")
    upload_id = created["UploadId"]
    etags = []
    for number, data in enumerate(parts_data, start=1):
        etags.append(
            s3.upload_part(Bucket=bucket, Key="big.bin", UploadId=upload_id, PartNumber=number, Body=data)[
                "ETag"
            ]
        )
    listed = s3.list_parts(Bucket=bucket, Key="big.bin", UploadId=upload_id)
    assert [p["PartNumber"] for p in listed["Parts"]] == [1, 2]
    with pytest.raises(ClientError):
        s3.get_object(Bucket=bucket, Key="big.bin")  # not there until completed
    done = s3.complete_multipart_upload(
        Bucket=bucket,
        Key="big.bin",
        UploadId=upload_id,
        MultipartUpload={"Parts": [{"PartNumber": n, "ETag": e} for n, e in enumerate(etags, start=1)]},
    )
    assert done["ETag"].endswith('-2"')
    assert s3.get_object(Bucket=bucket, Key="big.bin")["Body"].read() == b"".join(parts_data)
    aborted = s3.create_multipart_upload(Bucket=bucket, Key="never.bin")["UploadId"]
    s3.upload_part(Bucket=bucket, Key="never.bin", UploadId=aborted, PartNumber=1, Body=b"x")
    s3.abort_multipart_upload(Bucket=bucket, Key="never.bin", UploadId=aborted)
    with pytest.raises(ClientError) as no_upload:
        s3.list_parts(Bucket=bucket, Key="never.bin", UploadId=aborted)
    assert no_upload.value.response["Error"]["Code"] == "NoSuchUpload"
    # boto3's managed transfer (multipart above its threshold) works as well.
    payload = secrets.token_bytes(9 * MiB)
    from boto3.s3.transfer import TransferConfig

    config = TransferConfig(multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB)
    import io

    s3.upload_fileobj(io.BytesIO(payload), bucket, "managed.bin", Config=config)
    out = io.BytesIO()
    s3.download_fileobj(bucket, "managed.bin", out, Config=config)
    assert out.getvalue() == payload


def test_a_multipart_upload_left_a_week_is_removed_with_its_parts(
    local_server: ServerProcess, s3: Any
) -> None:
    """A client that dies mid-upload leaves its parts behind, and S3 clients cannot list uploads here to
    abort them: an upload untouched for a week goes (as MinIO's stale uploads do), parts and bytes."""
    bucket = _bucket(s3)
    stale = s3.create_multipart_upload(Bucket=bucket, Key="left.bin")["UploadId"]
    s3.upload_part(Bucket=bucket, Key="left.bin", UploadId=stale, PartNumber=1, Body=b"left behind")
    slow = s3.create_multipart_upload(Bucket=bucket, Key="slow.bin")["UploadId"]
    s3.upload_part(Bucket=bucket, Key="slow.bin", UploadId=slow, PartNumber=1, Body=b"still coming")
    database_url = local_server.env["DATABASE_URL"]
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "update storage.s3_multipart_uploads set created_at = now() - interval '8 days' "
            "where upload_id = any(%s)",
            ([stale, slow],),
        )
        conn.execute(  # the slow one's part came just now: it is not stale
            "update storage.s3_multipart_parts set uploaded_at = now() - interval '8 days' "
            "where upload_id = %s",
            (stale,),
        )
        row = conn.execute(
            "select blob_id::text from storage.s3_multipart_parts where upload_id = %s", (stale,)
        ).fetchone()
    assert row is not None
    blob = local_server.data_dir / "storage" / "blobs" / row[0][:2] / row[0]
    assert blob.exists()
    fresh = s3.create_multipart_upload(Bucket=bucket, Key="fresh.bin")["UploadId"]
    with pytest.raises(ClientError) as gone:
        s3.list_parts(Bucket=bucket, Key="left.bin", UploadId=stale)
    assert gone.value.response["Error"]["Code"] == "NoSuchUpload"
    assert not blob.exists()
    assert s3.list_parts(Bucket=bucket, Key="fresh.bin", UploadId=fresh)["UploadId"] == fresh
    assert [
        p["PartNumber"] for p in s3.list_parts(Bucket=bucket, Key="slow.bin", UploadId=slow)["Parts"]
    ] == [1]


def test_presigned_urls(s3: Any) -> None:
    bucket = _bucket(s3)
    put_url = s3.generate_presigned_url(
        "put_object", Params={"Bucket": bucket, "Key": "up.txt"}, ExpiresIn=60
    )
    assert httpx.put(put_url, content=b"via presigned put").status_code == 200
    get_url = s3.generate_presigned_url(
        "get_object", Params={"Bucket": bucket, "Key": "up.txt"}, ExpiresIn=60
    )
    assert httpx.get(get_url).content == b"via presigned put"
    tampered = get_url.replace("up.txt", "other.txt")
    refused = httpx.get(tampered)
    assert refused.status_code == 403 and b"SignatureDoesNotMatch" in refused.content


def test_a_query_value_with_a_percent_sign_is_signed_as_sent(s3: Any) -> None:
    """A query value is decoded once, as the client encoded it once: a prefix such as `50%41` (sent as
    `50%2541`) was decoded twice for the signature check, to `50A`, so boto3's own request was refused."""
    bucket = _bucket(s3)
    s3.put_object(Bucket=bucket, Key="50%41/a", Body=b"1")
    s3.put_object(Bucket=bucket, Key="50A/b", Body=b"1")
    listed = s3.list_objects_v2(Bucket=bucket, Prefix="50%41")
    assert [o["Key"] for o in listed["Contents"]] == ["50%41/a"]


def test_a_signed_query_cannot_be_re_encoded_to_mean_something_else(s3: Any) -> None:
    """Decoded twice, `prefix=%2541` and `prefix=A` had one canonical form, so a URL signed to list one
    prefix listed another (`%41`) as well."""
    bucket = _bucket(s3)
    s3.put_object(Bucket=bucket, Key="%41-hidden", Body=b"1")
    url = s3.generate_presigned_url("list_objects_v2", Params={"Bucket": bucket, "Prefix": "A"}, ExpiresIn=60)
    assert httpx.get(url).status_code == 200
    tampered = httpx.get(url.replace("prefix=A", "prefix=%2541"))
    assert tampered.status_code == 403 and b"SignatureDoesNotMatch" in tampered.content
    assert b"hidden" not in tampered.content


def test_a_presigned_signature_outside_ascii_is_refused_not_a_crash(s3: Any) -> None:
    bucket = _bucket(s3)
    s3.put_object(Bucket=bucket, Key="k", Body=b"1")
    url = s3.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "k"}, ExpiresIn=60)
    base, _, _signature = url.rpartition("X-Amz-Signature=")
    refused = httpx.get(f"{base}X-Amz-Signature=%C3%A9")
    assert refused.status_code == 403 and b"SignatureDoesNotMatch" in refused.content


@pytest.mark.parametrize("after", [5, None, ["a"], {"a": 1}, "a\u0000b"])
def test_a_continuation_token_not_made_here_is_invalid_argument(s3: Any, after: object) -> None:
    """A continuation token is the client's to send back, so it is input like any other: one whose `after`
    is not text was passed to SQL as it was (a 500)."""
    bucket = _bucket(s3)
    token = base64.urlsafe_b64encode(json.dumps({"after": after}).encode()).decode()
    with pytest.raises(ClientError) as refused:
        s3.list_objects_v2(Bucket=bucket, ContinuationToken=token)
    assert refused.value.response["Error"]["Code"] == "InvalidArgument"
    assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400


@pytest.mark.parametrize("field", ["Prefix", "Delimiter", "StartAfter"])
def test_a_listing_parameter_holding_nul_is_invalid_argument(s3: Any, field: str) -> None:
    bucket = _bucket(s3)
    with pytest.raises(ClientError) as refused:
        s3.list_objects_v2(Bucket=bucket, **{field: "a\u0000b"})
    assert refused.value.response["Error"]["Code"] == "InvalidArgument"


def test_s3_endpoint_on_s3_backend(cluster: TestCluster, tmp_path: Path) -> None:
    seaweed = SeaweedS3(tmp_path / "weed")
    seaweed.start()
    try:
        seaweed.client().create_bucket(Bucket="backing")
        env = {
            "S3_BUCKET": "backing",
            "S3_ENDPOINT_URL": seaweed.endpoint,
            "S3_REGION": REGION,
            "S3_ACCESS_KEY_ID": ACCESS_KEY,
            "S3_SECRET_ACCESS_KEY": SECRET_KEY,
        }
        server = _serve(cluster, tmp_path / "data", env)
        try:
            s3 = _client(server)
            bucket = _bucket(s3)
            body = secrets.token_bytes(6 * MiB)
            s3.put_object(Bucket=bucket, Key="k.bin", Body=body)
            assert s3.get_object(Bucket=bucket, Key="k.bin", Range="bytes=0-9")["Body"].read() == body[:10]
            assert s3.get_object(Bucket=bucket, Key="k.bin")["Body"].read() == body
            assert [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]] == ["k.bin"]
        finally:
            server.stop()
    finally:
        seaweed.stop()


def test_aws_cli(local_server: ServerProcess, s3: Any, tmp_path: Path) -> None:
    """The aws CLI, unchanged: `s3 mb`, `cp` up (multipart above its threshold) and down, `ls`, `rm`."""
    creds = s3._request_signer._credentials
    env = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": creds.access_key,
        "AWS_SECRET_ACCESS_KEY": creds.secret_key,
        "AWS_DEFAULT_REGION": "us-east-2",
        "AWS_CONFIG_FILE": str(tmp_path / "none"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
    }
    aws = [str(Path(sys.executable).parent / "aws"), "--endpoint-url", f"{local_server.url}/storage/v1/s3"]

    def run(*args: str) -> str:
        done = subprocess.run([*aws, *args], env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        return done.stdout

    bucket = f"cli-{secrets.token_hex(4)}"
    run("s3", "mb", f"s3://{bucket}")
    source = tmp_path / "big.bin"
    source.write_bytes(secrets.token_bytes(9 * MiB))
    run("s3", "cp", str(source), f"s3://{bucket}/dir/big.bin")
    assert "dir/" in run("s3", "ls", f"s3://{bucket}/")
    assert "big.bin" in run("s3", "ls", f"s3://{bucket}/dir/")
    run("s3", "cp", f"s3://{bucket}/dir/big.bin", str(tmp_path / "back.bin"))
    assert (tmp_path / "back.bin").read_bytes() == source.read_bytes()
    run("s3", "rm", "--recursive", f"s3://{bucket}/")
    run("s3", "rb", f"s3://{bucket}")


def test_s3_replaces_beside_an_insert_only_policy(local_server: ServerProcess, s3: Any) -> None:
    """An S3 access key acts as the project's admin, so PutObject and CompleteMultipartUpload replace an
    object that a role allowed only to INSERT created (its old blob collected), while that role, through
    REST, may still create new objects and replace none, whoever wrote them."""
    keys = json.loads((local_server.data_dir / "keys.json").read_text())
    admin = {"Authorization": f"Bearer {keys['api_key']}"}
    anon = {"Authorization": f"Bearer {keys['anon_key']}"}
    bucket = _bucket(s3)
    policy = (
        f'create policy "anon_insert_{bucket}" on storage.objects for insert to anon '
        f"with check (bucket = '{bucket}')"
    )
    ran = httpx.post(
        f"{local_server.url}/api/database/advance/rawsql/unrestricted", json={"query": policy}, headers=admin
    )
    assert ran.status_code == 200, ran.text
    objects = f"{local_server.url}/api/storage/buckets/{bucket}/objects"
    blobs = local_server.data_dir / "storage" / "blobs"

    def blob_files() -> int:
        return sum(len(names) for _, _, names in os.walk(blobs))

    assert httpx.put(f"{objects}/a.txt", content=b"anon's", headers=anon).status_code == 200
    files = blob_files()
    assert httpx.put(f"{objects}/a.txt", content=b"again", headers=anon).status_code == 403
    s3.put_object(Bucket=bucket, Key="a.txt", Body=b"s3's")
    assert s3.get_object(Bucket=bucket, Key="a.txt")["Body"].read() == b"s3's"
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key="a.txt")["UploadId"]
    part = s3.upload_part(Bucket=bucket, Key="a.txt", UploadId=upload_id, PartNumber=1, Body=b"parted")
    etag = part["ETag"]
    s3.complete_multipart_upload(
        Bucket=bucket,
        Key="a.txt",
        UploadId=upload_id,
        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": etag}]},
    )
    assert s3.get_object(Bucket=bucket, Key="a.txt")["Body"].read() == b"parted"
    assert blob_files() == files  # every replaced version's blob, and the part's, collected
    s3.put_object(Bucket=bucket, Key="b.txt", Body=b"s3's")
    for key in ("a.txt", "b.txt"):
        refused = httpx.put(f"{objects}/{key}", content=b"anon again", headers=anon)
        assert refused.status_code == 403 and refused.json()["error"] == "STORAGE_PERMISSION_DENIED"
    assert s3.get_object(Bucket=bucket, Key="b.txt")["Body"].read() == b"s3's"
    assert httpx.put(f"{objects}/c.txt", content=b"new", headers=anon).status_code == 200
