"""The S3 endpoint finds the client's address as every other route does: the peer, or the client a trusted
proxy names, and nothing at all for a peer that is not an IP. In process, signed with botocore, so the peer
can be chosen (the test transport's peer is `testclient`, as a Unix socket's has no IP either)."""

from __future__ import annotations

import ipaddress
import secrets
from collections.abc import Iterator

import pytest
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from starlette.testclient import TestClient

from kilnbase.app import create_app
from kilnbase.config import Settings, StorageSettings
from tests.storage.conftest import owner_sql
from tests.support.app import admin_headers

S3 = "http://testserver/storage/v1/s3"
PROXY = ("10.1.2.3", 40000)


def _credentials(client: TestClient) -> Credentials:
    created = client.post(
        "/api/storage/s3/access-keys", json={"description": "address"}, headers=admin_headers(client)
    )
    assert created.status_code == 201, created.text
    return Credentials(created.json()["accessKeyId"], created.json()["secretAccessKey"])


def _create_bucket(client: TestClient, credentials: Credentials, bucket: str, **headers: str) -> None:
    """CreateBucket, signed as boto3 signs it, with `headers` sent beside the signed ones."""
    region = StorageSettings().s3_region  # (the apps here keep the default)
    request = AWSRequest(method="PUT", url=f"{S3}/{bucket}", data=b"")
    S3SigV4Auth(credentials, "s3", region).add_auth(request)
    response = client.put(f"{S3}/{bucket}", headers={**dict(request.headers.items()), **headers})
    assert response.status_code == 200, response.text


def _audited_ip(client: TestClient, bucket: str) -> str | None:
    rows = owner_sql(
        client,
        "select host(ip_address) as ip from system.audit_logs where tool like 's3:%%' "
        "and details::text like %s order by id desc limit 1",
        (f"%{bucket}%",),
    )
    assert rows, f"no audit entry names {bucket}"
    ip: str | None = rows[0]["ip"]
    return ip


def test_a_peer_that_is_no_ip_can_still_write(client: TestClient) -> None:
    """Its write is audited with no address, not refused for an address the database cannot store."""
    bucket = f"s3addr-{secrets.token_hex(4)}"
    _create_bucket(client, _credentials(client), bucket)
    assert _audited_ip(client, bucket) is None


@pytest.fixture(scope="module")
def proxied(settings: Settings) -> Iterator[TestClient]:
    """The project's app behind a trusted proxy at 10.0.0.0/8, reached from that proxy."""
    behind = settings.model_copy(update={"trusted_proxies": (ipaddress.ip_network("10.0.0.0/8"),)})
    with TestClient(create_app(behind), raise_server_exceptions=False, client=PROXY) as test_client:
        yield test_client


def test_behind_a_trusted_proxy_the_audit_names_its_client(proxied: TestClient) -> None:
    credentials = _credentials(proxied)
    named = f"s3addr-{secrets.token_hex(4)}"
    _create_bucket(proxied, credentials, named, **{"x-forwarded-for": "198.51.100.7"})
    assert _audited_ip(proxied, named) == "198.51.100.7"
    direct = f"s3addr-{secrets.token_hex(4)}"
    _create_bucket(proxied, credentials, direct)
    assert _audited_ip(proxied, direct) == PROXY[0]
