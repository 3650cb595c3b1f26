"""`@insforge/sdk`'s storage methods, unchanged, against a running Kilnbase server: upload, uploadAuto,
download, list, remove, getPublicUrl, createSignedUrl(s), as a signed-in user and as the admin client."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from tests.support.node import run_node
from tests.support.servers import ServerProcess

if TYPE_CHECKING:
    from tests.support.postgres import TestCluster


@pytest.fixture(scope="module")
def server(cluster: TestCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    env = {
        "DATABASE_URL": cluster.create_database("storagesdk"),
        "KILNBASE_AUTH_ARGON2_TIME_COST": "2",
        "KILNBASE_AUTH_ARGON2_MEMORY_COST_KIB": "19456",
        "KILNBASE_AUTH_ARGON2_PARALLELISM": "1",
    }
    process = ServerProcess(tmp_path_factory.mktemp("storagesdk") / "data", env=env)
    process.start()
    stored = json.loads((process.data_dir / "keys.json").read_text())
    keys = {"url": process.url, "apiKey": stored["api_key"], "anonKey": stored["anon_key"]}
    with httpx.Client(base_url=process.url, headers={"Authorization": f"Bearer {keys['apiKey']}"}) as http:
        for name, public in (("sdk-public", True), ("sdk-private", False)):
            assert (
                http.post("/api/storage/buckets", json={"bucketName": name, "isPublic": public}).status_code
                == 201
            )
    yield keys
    process.stop()


def sdk(server: dict[str, str], body: str, **values: Any) -> Any:
    """Run `body` with `user` (a signed-up user's client), `adminClient` and `input`; return `out`."""
    script = f"""
import {{ createClient, createAdminClient }} from '@insforge/sdk';
const input = JSON.parse(process.env.SDK_INPUT);
const base = {{ baseUrl: process.env.BASE_URL, anonKey: process.env.ANON_KEY }};
const signUp = await createClient({{ ...base, isServerMode: true }}).auth.signUp(
  {{ email: input.email, password: 'correct horse 1' }});
if (signUp.error) throw new Error(signUp.error.message);
const user = createClient({{ ...base, accessToken: signUp.data.accessToken }});
const adminClient = createAdminClient({{ baseUrl: process.env.BASE_URL, apiKey: process.env.API_KEY }});
const out = {{}};
{body}
console.log(JSON.stringify(out));
"""
    env = {
        "BASE_URL": server["url"],
        "ANON_KEY": server["anonKey"],
        "API_KEY": server["apiKey"],
        "SDK_INPUT": json.dumps({"email": f"sdk-{secrets.token_hex(4)}@example.com", **values}),
    }
    return run_node(script, env)


def test_upload_download_list_remove(server: dict[str, str]) -> None:
    out = sdk(
        server,
        """
const bucket = user.storage.from('sdk-private');
const up = await bucket.upload('notes/today.txt', new Blob(['hello from the sdk'], { type: 'text/plain' }));
out.upload = up.error ? up.error.message
  : { key: up.data.key, size: up.data.size, mimeType: up.data.mimeType };
const auto = await bucket.uploadAuto(new File(['auto'], 'My Photo.txt', { type: 'text/plain' }));
out.autoKey = auto.data?.key ?? auto.error?.message;
const down = await bucket.download('notes/today.txt');
out.download = down.error ? down.error.message : await down.data.text();
const listed = await bucket.list({ prefix: 'notes/' });
out.list = listed.data?.data.map((o) => o.key);
out.pagination = listed.data?.pagination;
const searched = await bucket.list({ search: 'My-Photo', limit: 5 });
out.search = searched.data?.data.length;
const removed = await bucket.remove('notes/today.txt');
out.remove = removed.data ?? removed.error?.message;
const many = await bucket.remove([out.autoKey, 'never-there']);
out.removeMany = many.data?.results;
const gone = await bucket.download('notes/today.txt');
out.gone = gone.error?.statusCode;
""",
    )
    assert out["upload"] == {"key": "notes/today.txt", "size": 18, "mimeType": "text/plain"}
    assert out["autoKey"].startswith("My-Photo-") and out["autoKey"].endswith(".txt")
    assert out["download"] == "hello from the sdk"
    assert out["list"] == ["notes/today.txt"]
    assert out["pagination"] == {"offset": 0, "limit": 100, "total": 1}
    assert out["search"] == 1
    assert out["remove"] == {"message": "Object deleted successfully"}
    assert out["removeMany"] == [
        {"key": out["autoKey"], "status": "deleted"},
        {"key": "never-there", "status": "notFound"},
    ]
    assert out["gone"] == 404


def test_public_and_signed_urls(server: dict[str, str]) -> None:
    out = sdk(
        server,
        """
const pub = adminClient.storage.from('sdk-public');
await pub.upload('logo.txt', new Blob(['public bytes'], { type: 'text/plain' }));
const { data: { publicUrl } } = pub.getPublicUrl('logo.txt');
out.public = await (await fetch(publicUrl)).text();
const priv = user.storage.from('sdk-private');
await priv.upload('a/secret.txt', new Blob(['secret bytes'], { type: 'text/plain' }));
out.privateWithoutCredential = (await fetch(priv.getPublicUrl('a/secret.txt').data.publicUrl)).status;
const signed = await priv.createSignedUrl('a/secret.txt', 60);
out.signedHasExpiry = typeof signed.data?.expiresAt;
const fetched = await fetch(signed.data.signedUrl);
out.signed = { status: fetched.status, body: await fetched.text() };
out.tampered = (await fetch(signed.data.signedUrl.replace('secret.txt', 'other.txt'))).status;
const several = await priv.createSignedUrls(['a/secret.txt', 'missing.txt'], 30);
out.several = several.data.map((entry) => [entry.path, entry.signedUrl !== null, entry.error !== null]);
const stranger = createClient({ baseUrl: process.env.BASE_URL, anonKey: process.env.ANON_KEY });
const refused = await stranger.storage.from('sdk-private').createSignedUrl('a/secret.txt');
out.strangerSigned = refused.error?.statusCode;
""",
    )
    assert out["public"] == "public bytes"
    assert out["privateWithoutCredential"] == 401
    assert out["signedHasExpiry"] == "string"
    assert out["signed"] == {"status": 200, "body": "secret bytes"}
    assert out["tampered"] == 403
    assert out["several"] == [["a/secret.txt", True, False], ["missing.txt", False, True]]
    assert out["strangerSigned"] == 404
