"""Every HTTP route of the app, called by the project admin with malformed input, answers with an error that
says what was wrong (a 4xx), never a 500. The project's rule is that bad input gets a clear error and
changes nothing: a 500 does not tell the caller what to fix, and says the server failed when it was the
request that was wrong.

Each route gets, as the project admin:
- each path parameter in turn (the others naming things that exist) 5,000 characters long, not a UUID, NUL
  (`%00`), unicode, `..`, bytes that are not UTF-8, a number past 64 bits, a negative number, `../..`;
- with the path naming things that exist (a table, a bucket and an object, a schedule...: made for each
  test), bodies that are not JSON, a JSON array, string or number, objects whose fields all have one wrong
  type (objects, numbers past 64 bits, text, booleans, nulls, 10,000 characters of text), text JSON cannot
  hold, an empty object, JSON nested 10,000 levels deep (past what the parser takes) and 1,000 levels in
  the fields (within it); then the fields the route asks for each given a wrong value in turn; then bodies
  that claim to be multipart, a form or text;
- on a GET, the query parameters that routes read, all NUL, long, words where numbers or dates go, numbers
  past 64 bits, or unicode (again without those a refusal names, until none is refused); the records API
  also gets malformed filters, selects and orders;
- malformed ranges, preferences, conditions and tus upload headers.

After a route's bodies, the audit trail, where the refusals were recorded, must still read.

A 5xx that is an honest answer about something outside the request (an outside service that is not
configured or not reachable, the database out of reach: 502, 503 or 504, or 501 for a provider this server
does not offer, with a code of its own) is allowed; a 500 is not, nor is any answer coded `INTERNAL_ERROR`.
An exception out of the app fails the test as well.

The routes are read from the app itself, so a new route is swept as soon as it exists; a test checks that
the app under test serves exactly the routes swept here.
"""

from __future__ import annotations

import json
import random
import re
import secrets
import string
import tempfile
import urllib.parse
from collections.abc import Callable, Iterator
from typing import Any

import httpx2
import pytest
from starlette.routing import BaseRoute, Mount, Route
from starlette.testclient import TestClient

from kilnbase.app import KilnbaseApp, create_app
from kilnbase.config import Settings
from tests.support.app import admin_headers

#: The method of a route that declares none (it takes any), and of a mount.
ANY = "ANY"
BODY_METHODS = {"POST", "PUT", "PATCH", "DELETE"}
PARAMETER = re.compile(r"\{(\w+)(?::\w+)?\}")


def swept_routes(routes: list[BaseRoute]) -> list[tuple[str, str]]:
    """(method, path) of every route, HEAD left out (Starlette answers it with the GET route)."""
    found = []
    for route in routes:
        if isinstance(route, Route):
            methods = sorted(route.methods or ()) or [ANY]
            found += [(method, route.path) for method in methods if method != "HEAD"]
        elif isinstance(route, Mount):
            found.append((ANY, route.path))
        else:
            raise AssertionError(f"a route of a kind the sweep does not know: {route!r}")
    return found


def app_routes() -> list[tuple[str, str]]:
    """The routes of an app built as the tests build it: built, not started, so no database is needed."""
    with tempfile.TemporaryDirectory() as data_dir:
        app = create_app(Settings(database_url="postgresql://unused@127.0.0.1:1/unused", data_dir=data_dir))
        return swept_routes(app.router.routes)


ROUTES = app_routes()

#: What is left out of the sweep, and why.
NOT_SWEPT = {
    (ANY, "/socket.io"): "socket.io (realtime) speaks its own protocol, over long polling and WebSocket",
    (ANY, "/functions/{rest:path}"): "an invocation runs the user's function, whose answers are its own",
    ("GET", "/mcp"): "opens MCP's server-to-client event stream, which stays open",
}


def incompressible(length: int) -> str:
    """Text that does not compress (Postgres compresses a long value before it finds it too long for an
    index), the same on every run."""
    return "".join(random.Random(length).choices(string.ascii_letters + string.digits, k=length))


#: Path parameter values, as they are sent (percent-encoded where they must be).
HOSTILE_SEGMENTS = {
    "long": incompressible(5000),
    "not-a-uuid": "not-a-uuid",
    "nul": "%00",
    "unicode": urllib.parse.quote("ünïcødé-名前-😀"),
    "dot-dot": "%2E%2E",
    "not-utf8": "%FF%FE",
    "huge-number": "9" * 20,
    "negative": "-1",
    "traversal": "%2E%2E/%2E%2E/etc/passwd",
}
#: Well-formed values for parameters that name nothing the sweep makes.
PLAIN = {"environment": "test", "provider": "google", "scope": "key", "name": "openrouter"}
PLAIN_UUID = "00000000-0000-4000-8000-00000000beef"

#: Fields that many routes read: the wrong-type bodies give each of them (and each field a 400 names) one
#: value.
COMMON_FIELDS = [
    *("name", "key", "value", "id", "email", "password", "token", "refreshToken", "code", "slug"),
    *("query", "params", "sql", "table", "tableName", "columns", "rows", "records", "schema", "dryRun"),
    *("bucket", "bucketName", "isPublic", "url", "events", "headers", "body", "enabled", "description"),
    *("model", "messages", "input", "prompt", "scopes", "config", "status", "cronSchedule", "functionUrl"),
    *("httpMethod", "keys", "entries", "ttl", "expected", "next", "by", "amount", "limit", "channel"),
    *("pattern", "metadata", "provider", "redirectTo", "clientId", "clientSecret", "ruleId", "reason"),
    *("retentionDays", "expiresIn", "filename", "contentType", "size", "column", "version", "mode"),
    *("note", "n", "doc", "at"),  # (the columns of the table the sweep makes)
]
#: Fields that may hold any JSON (a value, a payload, headers): 1,000 levels each, in one body.
NESTING_FIELDS = ["value", "body", "metadata", "config", "params", "headers", "input", "rows", "doc", "data"]
#: One value for every field of a body, by kind.
WRONG_VALUES: dict[str, Any] = {
    "objects": {"wrong": [[1.5, True, None]]},
    "huge-numbers": -(10**30),
    "text": "not-the-right-type",
    "booleans": True,
    "nulls": None,
    "long-text": incompressible(10_000),
}
#: Values for one field of a body that may otherwise pass.
ONE_FIELD: dict[str, Any] = {
    "object": WRONG_VALUES["objects"],
    "long-text": WRONG_VALUES["long-text"],
    "huge-number": 1e30,
    "negative": -1,
}
#: Bodies of other kinds than JSON, malformed: (Content-Type, body).
OTHER_BODIES = {
    "multipart": (
        "multipart/form-data; boundary=sweep",
        b"--sweep\r\nContent-Disposition: form-data\r\n\r\nx",
    ),
    "multipart-no-boundary": ("multipart/form-data", b"--x--"),
    "form": ("application/x-www-form-urlencoded", b"a=%ZZ&&=b&name[]=%00"),
    "text": ("text/plain", b"\xff\xfe not json"),
}

#: Query parameters the routes read (found in their code), all given one malformed value at a time.
QUERY_NAMES = [
    *("limit", "offset", "page", "pageSize", "after", "before", "cursor", "marker", "since", "from", "to"),
    *("startDate", "endDate", "start_date", "end_date", "days", "q", "search", "schema", "format", "order"),
    *("sort", "status", "scope", "severity", "category", "channelId", "eventName", "configId", "actor"),
    *("action", "module", "source", "expiresIn", "expires", "prefix", "delimiter", "filename", "success"),
    *("mcp", "client_type", "token", "user_code", "resize", "quality", "width", "height", "type", "model"),
    *("redirect_uri", "state", "code", "signature", "key", "select"),
]
HOSTILE_QUERY = {
    "nul": "\x00",
    "long": "9" * 500,  # (for each of the names: a URL is at most 64 KiB)
    "word": "yesterday",
    "huge-number": "-99999999999999999999",
    "unicode": "ünïcødé-😀",
}
#: Malformed PostgREST requests for the records API, on the table the sweep makes.
RECORDS_QUERIES = [
    "select=((",
    "select=id,missing(*)",
    "order=n.sideways",
    "n=eq.not-a-number",
    "id=eq.not-a-uuid",
    "id=in.(a,b",
    "doc->>a=eq.1&doc->b->c=cs.{",
    "at=gt.not-a-date",
    "or=(n.eq.1",
    "n=gt." + "9" * 5000,
    "limit=-1&offset=abc",
    "note=like.%00",
]
#: Ranges, preferences, conditions and tus's upload headers, all malformed.
HOSTILE_HEADERS: dict[str, str | bytes] = {
    "Range": "bytes=abc-,-0,99999999999999999999-",
    "Prefer": "return=sideways, count=wat, resolution=maybe, missing=default, max-affected=-1",
    "Accept": "application/vnd.pgrst.object+json;nulls=maybe, text/csv;q=abc",
    "Accept-Profile": "ünïcødé".encode(),  # (UTF-8 bytes, where a header's text is Latin-1)
    "Content-Profile": "no_such_schema",
    "If-None-Match": '"unterminated',
    "If-Modified-Since": "yesterday",
    "Idempotency-Key": "k" * 300,
    "Tus-Resumable": "1.0.0",
    "Upload-Length": "-1",
    "Upload-Offset": "abc",
    "Upload-Metadata": "filename !!!,contentType",
    "Upload-Defer-Length": "2",
    "Content-Range": "bytes */-1",
    "X-Amz-Content-Sha256": "not-a-hash",
    "X-Amz-Date": "yesterday",
}


def deep(levels: int) -> bytes:
    """An object nested `levels` deep, written by hand (JSON writers stop at some hundreds of levels)."""
    return b'{"a":' * levels + b"1" + b"}" * levels


def malformed_bodies(fields: list[str]) -> Iterator[tuple[str, bytes]]:
    """(what, body): JSON bodies no route takes, for a route that asked for `fields`."""
    names = dict.fromkeys([*fields, *COMMON_FIELDS])
    yield "invalid-json", b'{"name": "sweep",'
    yield "array", b'[{"name": "sweep"}]'
    yield "string", b'"sweep"'
    yield "number", b"12345678901234567890123456789"
    for kind, value in WRONG_VALUES.items():
        yield f"all-{kind}", json.dumps(dict.fromkeys(names, value)).encode()
    yield "lone-surrogate", json.dumps(dict.fromkeys(names, "\ud800")).encode()
    yield "not-utf8", b'{"name": "\xff\xfe"}'
    yield "empty-object", b"{}"
    yield "nested-10000", deep(10_000)
    nested = (json.dumps(name).encode() + b":" + deep(1000) for name in [*fields, *NESTING_FIELDS])
    yield "nested-1000-fields", b"{" + b",".join(nested) + b"}"


def named_fields(answer: httpx2.Response) -> list[str]:
    """The fields a 400 names (as `field: reason, ...`)."""
    try:
        message = answer.json().get("message", "") if answer.status_code == 400 else ""
    except ValueError:
        return []
    if not isinstance(message, str):
        return []
    return [name.split(".")[0] for name in re.findall(r"(?:^|, )([A-Za-z_][\w.]*): ", message)]


def refused_names(answer: httpx2.Response, names: list[str]) -> set[str]:
    """The names among `names` that a 400's message mentions."""
    if answer.status_code != 400:
        return set()
    try:
        message = str(answer.json().get("message", ""))
    except ValueError:
        return set()
    return set(names) & set(re.findall(r"\w+", message))


class Made:
    """Things the swept routes can name, made through the API as the admin: new for each test, since a
    malformed DELETE may still delete."""

    def __init__(self, client: TestClient, headers: dict[str, str]) -> None:
        self.client = client
        self.headers = headers
        self.tag = secrets.token_hex(4)

    def call(self, method: str, path: str, body: Any) -> Any:
        answer = self.client.request(method, path, headers=self.headers, json=body)
        assert answer.status_code < 300, f"{method} {path}: {answer.status_code} {answer.text}"
        return answer.json()

    def table(self) -> str:
        """A table of one row, whose JSON holds a number past 64 bits (JSON's numbers have no range, and
        jsonb keeps this one exactly: 1e30 reads back as 1000...0)."""
        name = f"sweep_{self.tag}"
        query = (
            f"create table public.{name} (id uuid primary key default gen_random_uuid(), note text, n int, "
            f"doc jsonb, at timestamptz default now()); "
            f"insert into public.{name} (note, n, doc) values ('kept', 1, '{{\"a\": 1e30}}')"
        )
        self.call("POST", "/api/database/advance/rawsql", {"query": query})
        return name

    def function(self) -> str:
        name = f"sweep_fn_{self.tag}"
        query = f"create function public.{name}(n int) returns int language sql as 'select n'"
        self.call("POST", "/api/database/advance/rawsql", {"query": query})
        return name

    def bucket(self) -> str:
        name = f"sweep-{self.tag}"
        self.call("POST", "/api/storage/buckets", {"bucketName": name, "isPublic": False})
        return name

    def bucket_and_key(self) -> dict[str, str]:
        bucket, key = self.bucket(), "notes/kept.txt"
        headers = {**self.headers, "Content-Type": "text/plain"}
        stored = self.client.put(
            f"/api/storage/buckets/{bucket}/objects/{key}", headers=headers, content=b"kept"
        )
        assert stored.status_code < 300, stored.text
        return {"bucket": bucket, "key": key}

    def schedule(self) -> str:
        body = {
            "name": f"sweep-{self.tag}",
            "cronSchedule": "*/5 * * * *",
            "functionUrl": "https://example.com/sweep",
            "httpMethod": "POST",
        }
        return str(self.call("POST", "/api/schedules", body)["id"])

    def webhook(self) -> str:
        body = {
            "name": f"sweep-{self.tag}",
            "tableName": self.table(),
            "events": ["INSERT"],
            "url": "https://example.com/sweep",
        }
        return str(self.call("POST", "/api/database/webhooks", body)["id"])

    def channel(self) -> str:
        return str(self.call("POST", "/api/realtime/channels", {"pattern": f"sweep-{self.tag}:%"})["id"])

    def secret(self) -> str:
        key = f"SWEEP_{self.tag.upper()}"
        self.call("POST", "/api/secrets", {"key": key, "value": "kept"})
        return key

    def kv_entry(self) -> dict[str, str]:
        self.call("PUT", f"/api/kv/entries/sweep-{self.tag}/kept", {"value": 1})
        return {"namespace": f"sweep-{self.tag}", "key": "kept"}

    def suppression(self) -> str:
        body = {"ruleId": "rls-disabled", "scope": "rule", "reason": "other", "note": "sweep"}
        return str(self.call("POST", "/api/advisor/suppressions", body)["id"])

    def agent_key(self) -> str:
        body = {"name": f"sweep-{self.tag}", "scopes": ["*:read"]}
        return str(self.call("POST", "/api/agents/keys", body)["id"])

    def gateway_key(self) -> str:
        return str(self.call("POST", "/api/ai/gateway/keys", {"name": f"sweep-{self.tag}"})["id"])

    def s3_key(self) -> str:
        return str(self.call("POST", "/api/storage/s3/access-keys", {})["id"])

    def jwt_provider(self) -> str:
        key = f"sweep-{self.tag}"
        body = {
            "name": key,
            "provider_key": key,
            "issuer": "https://issuer.example.com",
            "jwks_url": "https://issuer.example.com/jwks.json",
        }
        self.call("POST", "/api/auth/jwt-providers", body)
        return key

    def custom_oauth(self) -> str:
        key = f"sweep-{self.tag}"
        body = {
            "key": key,
            "name": key,
            "discoveryEndpoint": "https://issuer.example.com/.well-known/openid-configuration",
            "clientId": "sweep",
            "clientSecret": "sweep",
        }
        self.call("POST", "/api/auth/oauth/custom/configs", body)
        return key

    def user(self) -> str:
        body = {"email": f"sweep-{self.tag}@example.com", "password": "password-123"}
        return str(self.call("POST", "/api/auth/users", body)["user"]["id"])


#: What a route's path parameters name, made for its test: the first pattern its path starts with.
MAKERS: list[tuple[str, Callable[[Made], dict[str, str]]]] = [
    (r"/api/database/(records/)?rpc/", lambda made: {"function": made.function()}),
    (r"/api/database/webhooks/", lambda made: {"id": made.webhook()}),
    (r"/api/(database|metadata)/", lambda made: {"table": made.table()}),
    (r"/api/storage/buckets/\{bucket\}/.*\{key", lambda made: made.bucket_and_key()),
    (r"/api/storage/buckets/", lambda made: {"bucket": made.bucket()}),
    (r"/storage/v1/s3/", lambda made: {"path": made.bucket()}),
    (r"/api/storage/s3/access-keys/", lambda made: {"id": made.s3_key()}),
    (r"/api/schedules/", lambda made: {"id": made.schedule()}),
    (r"/api/realtime/channels/", lambda made: {"id": made.channel()}),
    (r"/api/secrets/", lambda made: {"key": made.secret()}),
    (r"/api/kv/entries/\{namespace\}", lambda made: made.kv_entry()),
    (r"/api/advisor/suppressions/", lambda made: {"id": made.suppression()}),
    (r"/api/agents/keys/", lambda made: {"id": made.agent_key()}),
    (r"/api/ai/gateway/keys/", lambda made: {"id": made.gateway_key()}),
    (r"/api/auth/jwt-providers/", lambda made: {"provider_key": made.jwt_provider()}),
    (r"/api/auth/oauth/custom/", lambda made: {"key": made.custom_oauth()}),
    (r"/api/auth/(users|profiles)/", lambda made: {"user_id": made.user()}),
    (r"/api/auth/email-templates/", lambda _made: {"template_type": "email-verification-code"}),
    (r"/api/logs/", lambda _made: {"source": "insforge.logs"}),
    (r"/api/docs/", lambda _made: {"doc_type": "db-sdk", "feature": "db", "language": "typescript"}),
    (r"/api/ai/prices/", lambda _made: {"model_id": "openai/gpt-4o"}),
]


def named(made: Made, path: str) -> dict[str, str]:
    """A value for each parameter of `path`, as sent: naming what exists (made now), else well formed."""
    names = PARAMETER.findall(path)
    made_for = next((make for pattern, make in MAKERS if re.match(pattern, path)), None) if names else None
    values = made_for(made) if made_for is not None else {}
    sent = {}
    for name in names:
        if name in values:
            sent[name] = urllib.parse.quote(values[name], safe="/")
        elif name in PLAIN:
            sent[name] = PLAIN[name]
        elif name.lower().endswith("id") or name == "upload":
            sent[name] = PLAIN_UUID
        else:
            sent[name] = f"sweep_{name.lower()}"
    return sent


def fill(path: str, values: dict[str, str]) -> str:
    return PARAMETER.sub(lambda match: values[match.group(1)], path)


def problem(answer: httpx2.Response) -> str | None:
    """Why `answer` breaks the rule, if it does: a 500, or a 5xx without a code of its own."""
    if answer.status_code < 500:
        return None
    try:
        body: Any = answer.json()
    except ValueError:
        body = None
    code: Any = None
    if isinstance(body, dict):  # (InsForge's {error}, OpenAI's {error: {code}}, PostgREST's {code})
        error = body.get("error")
        code = error.get("code") if isinstance(error, dict) else error or body.get("code")
    if answer.status_code != 500 and isinstance(code, str) and code and code.upper() != "INTERNAL_ERROR":
        return None
    return f"{answer.status_code} {answer.text[:300]}"


class Sweep:
    """One route's requests, and the answers that broke the rule."""

    def __init__(self, client: TestClient, path: str) -> None:
        self.client = client
        self.path = path
        self.headers = admin_headers(client)
        self.values = named(Made(client, self.headers), path)
        self.url = fill(path, self.values)
        self.problems: list[str] = []

    def send(
        self,
        method: str,
        url: str,
        what: str,
        body: bytes | None = None,
        headers: dict[str, str | bytes] | None = None,
    ) -> httpx2.Response:
        sent: dict[str, str | bytes] = {**self.headers}
        if body is not None:
            sent["Content-Type"] = "application/json"
        sent.update(headers or {})
        as_bytes = {
            name.encode(): value if isinstance(value, bytes) else value.encode()
            for name, value in sent.items()
        }
        answer = self.client.request(method, url, headers=as_bytes, content=body)
        found = problem(answer)
        if found:
            self.problems.append(f"{method} {url[:150]} ({what}): {found}")
        return answer

    def route(self, method: str) -> None:
        with_body = method in BODY_METHODS
        # The fields the route asks for (its 400 to an empty object names them), each given some text: a
        # body that may pass the route's checks, to send with each malformed parameter, and with each field
        # made wrong in turn.
        fields = named_fields(self.send(method, self.url, "empty-object", b"{}")) if with_body else []
        guess = dict.fromkeys(fields, "sweep")
        self.parameters(method, json.dumps(guess).encode() if with_body else None)
        if with_body:
            self.bodies(method, fields, guess)
            # The refusals were audited: the audit trail still reads (its newest entries are this test's).
            self.send("GET", "/api/logs/audits?limit=100", f"the audit trail, after {method} {self.path}")
        else:
            for what, value in HOSTILE_QUERY.items():
                self.query(method, value, f"query: {what}")
        self.send(method, self.url, "headers", b"{}" if with_body else None, HOSTILE_HEADERS)
        if self.path.startswith("/api/database/records/{"):
            for query in RECORDS_QUERIES:
                self.send(method, f"{self.url}?{query}", query, b"{}" if with_body else None)

    def parameters(self, method: str, body: bytes | None) -> None:
        """Each parameter in turn malformed, the others naming what exists: a check of one must not hide
        what the route does with the next."""
        for name in self.values:
            for what, segment in HOSTILE_SEGMENTS.items():
                self.send(method, fill(self.path, {**self.values, name: segment}), f"{name}: {what}", body)

    def bodies(self, method: str, fields: list[str], guess: dict[str, str]) -> None:
        for what, body in malformed_bodies(fields):
            self.send(method, self.url, what, body)
        for field in fields:
            for what, value in ONE_FIELD.items():
                self.send(method, self.url, f"{field}: {what}", json.dumps({**guess, field: value}).encode())
        for what, (kind, body) in OTHER_BODIES.items():
            self.send(method, self.url, what, body, {"Content-Type": kind})

    def query(self, method: str, value: str, what: str) -> None:
        """Every name of `QUERY_NAMES` given `value`; again without the names a refusal mentions, until none
        is refused, so that a route that checks its parameters one by one has each of them checked."""
        names = list(QUERY_NAMES)
        while names:
            answer = self.send(
                method, f"{self.url}?{urllib.parse.urlencode(dict.fromkeys(names, value))}", what
            )
            refused = refused_names(answer, names)
            if not refused:
                return
            names = [name for name in names if name not in refused]


def cases() -> Iterator[Any]:
    """Every route but those `NOT_SWEPT` (each with the reason it is left out)."""
    for method, path in ROUTES:
        if (method, path) not in NOT_SWEPT:
            yield pytest.param(method, path, id=f"{method} {path}")


@pytest.mark.parametrize(("method", "path"), list(cases()))
def test_malformed_input_is_never_a_500(client: TestClient, method: str, path: str) -> None:
    sweep = Sweep(client, path)
    for verb in ["GET", "POST"] if method == ANY else [method]:
        sweep.route(verb)
    assert not sweep.problems, "\n".join(sweep.problems)


def test_the_sweep_covers_every_route_of_the_app(client: TestClient) -> None:
    """The app under test (started, over its database) serves exactly the routes swept here."""
    app = client.app
    assert isinstance(app, KilnbaseApp)
    assert swept_routes(app.router.routes) == ROUTES


CHAT = {"model": "openai/gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/api/ai/chat/completion", CHAT),
        ("POST", "/v1/chat/completions", {**CHAT, "stream": True}),
        ("POST", "/v1/embeddings", {"model": "openai/text-embedding-3-small", "input": "hi"}),
        ("POST", "/api/ai/image/generation", {"model": "openai/gpt-image-1", "prompt": "a kiln"}),
        ("GET", "/api/ai/models", None),
        ("POST", "/api/memory/recall", {"query": "kilns"}),
        ("POST", "/api/payments/stripe/test/sync", {}),
        ("POST", "/api/payments/razorpay/test/orders", {"amount": 100, "currency": "INR"}),
        ("POST", "/api/email/send-raw", {"to": "someone@example.com", "subject": "x", "html": "<p>x</p>"}),
        (
            "POST",
            "/api/messaging/send",
            {"channel": "email", "to": "someone@example.com", "subject": "x", "body": "x"},
        ),
    ],
)
def test_an_outside_service_that_is_not_configured_is_a_clear_refusal(
    client: TestClient, method: str, path: str, body: dict[str, Any] | None
) -> None:
    """Well-formed calls that need an outside service this server has not been given (a model provider's
    key, Stripe's or Razorpay's keys, SMTP): refused with a code that names it (4xx, or 502/503), not a
    500."""
    answer = client.request(method, path, headers=admin_headers(client), json=body)
    assert answer.status_code >= 400 and problem(answer) is None, answer.text
