"""External JWT providers (`/api/auth/jwt-providers`, admin): the identity providers whose access tokens the
project accepts, so an app that signs its users in with Clerk, Auth0, Firebase, WorkOS or its own OIDC can
use the records API, storage and functions as those users, with RLS deciding what they reach.

InsForge's contract (`api/routes/auth/external-jwt.routes.ts`, `services/auth/external-jwt.service.ts`): a
provider is `{id, name, provider_key, issuer, audience, jwks_url, claim_mappings, default_role,
subject_type, is_enabled, created_at, updated_at}`, addressed by its `provider_key`; bodies are checked with
InsForge's rules and refused as 400 `INVALID_INPUT` `path: message, ...`; the JWKS URL must be HTTPS except
on localhost; an unknown key is 404 `NOT_FOUND` "JWT provider not found"; the list is `{providers}`, newest
first; a delete answers "JWT provider deleted successfully". How tokens are verified is
`identity/external_tokens.py`. Where Kilnbase differs, on purpose:

- A provider mints identities, so agent keys may read providers (`auth:read`) but never create, change or
  delete one, whatever their scopes (as database webhooks: `database_webhooks/service.py`); what they read
  shows a JWKS URL's userinfo and query values as `***` (a credential the admin put there).
- A token of a provider whose `default_role` is `project_admin` acts as project_admin in the database only
  (the records API, storage, functions); it is never an admin of Kilnbase's API (`Principal.is_admin`), as
  InsForge's `verifyAdmin` takes only its own tokens. Kept because InsForge accepts it and a backend
  service's tokens may need it; every create or change that grants it is audited with `grantsProjectAdmin`,
  and the docs say what it means.
- `claim_mappings` may not name the claims Kilnbase sets itself (`role`, `iss`, `exp`, ...), so a token can
  never choose its own role; further mappings are copied into the request's claims for RLS
  (`auth.jwt() ->> 'org_id'`), where InsForge keeps only `sub` and `email`. At most `MAX_MAPPINGS`.
- A second provider with the same `provider_key` is 409 `ALREADY_EXISTS`; a project has at most
  `MAX_PROVIDERS`.

Every change, and every refused one, is audited (module `AUTH`) in the transaction that makes it; the
process that made it reloads its providers at once, the others on the table's notification.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal
from urllib.parse import urlsplit

import httpx
import orjson
import psycopg
from psycopg.rows import DictRow
from pydantic import Field, field_validator

from kilnbase import audit
from kilnbase.auth.auth_config import iso
from kilnbase.auth.validation import StrictBody, parse_body, storable
from kilnbase.db.session import Database
from kilnbase.http.errors import ApiError, require_admin_actor, require_person
from kilnbase.http.json_body import FIX_FIELDS
from kilnbase.identity.actor import Actor
from kilnbase.identity.external_tokens import RESERVED_CLAIMS, ExternalTokens, redacted_url

MODULE = "AUTH"
MAX_PROVIDERS = 100
MAX_MAPPINGS = 32
MAX_CLAIM_PATH = 256
LIST_HINT = (
    "List the providers with GET /api/auth/jwt-providers; create one with POST /api/auth/jwt-providers."
)

Role = Literal["anon", "authenticated", "project_admin"]
SubjectType = Literal["text", "uuid"]

_COLUMNS = (
    "id, name, provider_key, issuer, audience, jwks_url, claim_mappings, default_role, subject_type, "
    "is_enabled, created_at, updated_at"
)


def not_found() -> ApiError:
    return ApiError(404, "NOT_FOUND", "JWT provider not found", LIST_HINT)


#: Why an agent key may not manage these, whatever its scopes (`require_person`).
_AGENT_REFUSAL = (
    "Agent keys may not create, change or delete JWT providers: a provider decides who may sign in "
    "and as which role."
)
_ASK_A_PERSON = "Ask the project admin to make this change (with the project's API key or the dashboard)."


def _claim_mappings(value: dict[str, str] | None) -> dict[str, str] | None:
    """InsForge's shape (`sub` and `email` non-empty, any further name to a path), bounded, and never
    naming a claim Kilnbase sets itself."""
    if value is None:
        return None
    for required in ("sub", "email"):
        if required not in value:
            raise ValueError(f"{required}: Required")
    if len(value) > MAX_MAPPINGS:
        raise ValueError(f"at most {MAX_MAPPINGS} claims may be mapped")
    for name, path in value.items():
        if not name or not path:
            raise ValueError(f"{name or '(empty name)'}: String must contain at least 1 character(s)")
        if len(name) > MAX_CLAIM_PATH or len(path) > MAX_CLAIM_PATH:
            raise ValueError(f"{name[:40]}: names and paths are at most {MAX_CLAIM_PATH} characters")
        if name in RESERVED_CLAIMS:
            reserved = ", ".join(sorted(RESERVED_CLAIMS))
            raise ValueError(f"{name}: is set by Kilnbase and cannot be mapped (reserved: {reserved})")
    storable(value)
    return value


def _jwks_url(value: str | None) -> str | None:
    """zod's `.url()`: a URL with a scheme and a host."""
    if value is None:
        return None
    parts = urlsplit(value)
    if not parts.scheme or not parts.netloc or any(c.isspace() for c in value):
        raise ValueError("Invalid url")
    return value


class ProviderCreate(StrictBody):
    """InsForge's create schema, its fields in its order (a refusal lists problems in that order)."""

    name: str = Field(min_length=1, max_length=255)
    provider_key: str = Field(min_length=1, max_length=64, pattern=r"^[a-z0-9_-]+$")
    issuer: str = Field(min_length=1, max_length=2048)
    audience: str | None = Field(None, max_length=2048)
    jwks_url: str = Field(max_length=2048)
    claim_mappings: dict[str, str] | None = None
    default_role: Role | None = None
    subject_type: SubjectType | None = None
    is_enabled: bool | None = None

    _mappings = field_validator("claim_mappings")(_claim_mappings)
    _url = field_validator("jwks_url")(_jwks_url)
    _text = field_validator("name", "issuer", "audience")(storable)


class ProviderUpdate(StrictBody):
    """Only the fields sent change; `audience: null` removes the audience check. `provider_key` is not
    among them (InsForge's update schema leaves it out too): it names the provider."""

    name: str | None = Field(None, min_length=1, max_length=255)
    issuer: str | None = Field(None, min_length=1, max_length=2048)
    audience: str | None = Field(None, max_length=2048)
    jwks_url: str | None = Field(None, max_length=2048)
    claim_mappings: dict[str, str] | None = None
    default_role: Role | None = None
    subject_type: SubjectType | None = None
    is_enabled: bool | None = None

    _mappings = field_validator("claim_mappings")(_claim_mappings)
    _url = field_validator("jwks_url")(_jwks_url)
    _text = field_validator("name", "issuer", "audience")(storable)


def _fetchable(url: str) -> bool:
    """Whether the HTTP client can address `url` at all: a port that is not a number (`host:abc`) passes
    `urlsplit`, and would fail every fetch of the provider's keys."""
    try:
        httpx.URL(url)
    except (httpx.InvalidURL, ValueError):
        return False
    return True


def _check_jwks_url(url: str) -> None:
    """InsForge's rule: HTTPS, except on this machine (a provider run locally for development)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or not _fetchable(url):
        raise ApiError(400, "INVALID_INPUT", "Invalid JWKS URL format", "Send the provider's JWKS URL.")
    if parts.scheme != "https" and parts.hostname not in ("localhost", "127.0.0.1"):
        raise ApiError(
            400,
            "INVALID_INPUT",
            "JWKS URL must use HTTPS",
            "Use the provider's https:// JWKS URL (http is accepted only for localhost).",
        )


def provider_json(row: DictRow, *, for_agent: bool = False) -> dict[str, Any]:
    """A provider as answered; to an agent key, its JWKS URL with any credential in it hidden
    (`redacted_url`): an agent reads providers, and a secret the admin put in the URL is not its to see."""
    return {
        "id": str(row["id"]),
        "name": row["name"],
        "provider_key": row["provider_key"],
        "issuer": row["issuer"],
        "audience": row["audience"],
        "jwks_url": redacted_url(row["jwks_url"]) if for_agent else row["jwks_url"],
        "claim_mappings": row["claim_mappings"],
        "default_role": row["default_role"],
        "subject_type": row["subject_type"],
        "is_enabled": row["is_enabled"],
        "created_at": iso(row["created_at"]),
        "updated_at": iso(row["updated_at"]),
    }


class JwtProviders:
    def __init__(self, database: Database, external: ExternalTokens) -> None:
        self._database = database
        self._external = external

    async def list(self, actor: Actor) -> list[dict[str, Any]]:
        require_admin_actor(actor)
        async with self._database.as_owner() as cur:
            await cur.execute(
                f"select {_COLUMNS} from auth.jwt_providers order by created_at desc, provider_key "
                f"limit {MAX_PROVIDERS}"
            )
            rows = await cur.fetchall()
        return [provider_json(row, for_agent=actor.principal.agent is not None) for row in rows]

    async def get(self, actor: Actor, provider_key: str) -> dict[str, Any]:
        require_admin_actor(actor)
        async with self._database.as_owner() as cur:
            await cur.execute(
                f"select {_COLUMNS} from auth.jwt_providers where provider_key = %s", (provider_key,)
            )
            row = await cur.fetchone()
        if row is None:
            raise not_found()
        return provider_json(row, for_agent=actor.principal.agent is not None)

    async def create(self, actor: Actor, body: Any) -> dict[str, Any]:
        details: dict[str, Any] = {}
        if isinstance(body, Mapping):
            details = {"provider_key": body.get("provider_key"), "issuer": body.get("issuer")}
        async with audit.refusals(self._database, actor, "CREATE_JWT_PROVIDER", MODULE, details):
            require_person(actor, _AGENT_REFUSAL, _ASK_A_PERSON)
            fields = parse_body(ProviderCreate, body)
            _check_jwks_url(fields.jwks_url)
            role = fields.default_role or "authenticated"
            details.update(
                jwks_url=redacted_url(fields.jwks_url),
                default_role=role,
                grantsProjectAdmin=role == "project_admin",
            )
            try:
                async with self._database.as_owner() as cur:
                    # (Counted under a lock every create takes, so two at once cannot both pass the limit;
                    # readers and token checks are not held up.)
                    await cur.execute("lock table auth.jwt_providers in share row exclusive mode")
                    await cur.execute("select count(*) as n from auth.jwt_providers")
                    counted = await cur.fetchone()
                    if counted is not None and counted["n"] >= MAX_PROVIDERS:
                        raise ApiError(
                            409,
                            "TOO_MANY_JWT_PROVIDERS",
                            f"A project may have at most {MAX_PROVIDERS} JWT providers.",
                            "Delete providers that are no longer used (DELETE /api/auth/jwt-providers/:key).",
                        )
                    await cur.execute(
                        "insert into auth.jwt_providers (name, provider_key, issuer, audience, jwks_url, "
                        "claim_mappings, default_role, subject_type, is_enabled) "
                        f"values (%s, %s, %s, %s, %s, %s::jsonb, %s, %s, %s) returning {_COLUMNS}",
                        (
                            fields.name,
                            fields.provider_key,
                            fields.issuer,
                            fields.audience,
                            fields.jwks_url,
                            orjson.dumps(fields.claim_mappings or {"sub": "sub", "email": "email"}).decode(),
                            role,
                            fields.subject_type or "text",
                            True if fields.is_enabled is None else fields.is_enabled,
                        ),
                    )
                    row = await cur.fetchone()
                    assert row is not None
                    await audit.record(cur, actor, "CREATE_JWT_PROVIDER", MODULE, details)
            except psycopg.errors.UniqueViolation:
                raise ApiError(
                    409,
                    "ALREADY_EXISTS",
                    f'JWT provider "{fields.provider_key}" already exists',
                    "Choose another provider_key, or change that one (PATCH /api/auth/jwt-providers/:key).",
                ) from None
        await self._external.reload()
        return provider_json(row)

    async def update(self, actor: Actor, provider_key: str, body: Any) -> dict[str, Any]:
        """Change the fields sent (even to `false` or `null`); sending none answers the provider as is."""
        details: dict[str, Any] = {"provider_key": provider_key}
        async with audit.refusals(self._database, actor, "UPDATE_JWT_PROVIDER", MODULE, details):
            require_person(actor, _AGENT_REFUSAL, _ASK_A_PERSON)
            fields = parse_body(ProviderUpdate, body)
            given = {name: getattr(fields, name) for name in fields.model_fields_set}
            details["updatedFields"] = sorted(given)
            for required in ("name", "issuer", "jwks_url", "claim_mappings", "default_role", "subject_type"):
                if required in given and given[required] is None:
                    raise ApiError(
                        400, "INVALID_INPUT", f"{required}: Expected string, received null", FIX_FIELDS
                    )
            if given.get("is_enabled", False) is None:
                raise ApiError(
                    400, "INVALID_INPUT", "is_enabled: Expected boolean, received null", FIX_FIELDS
                )
            if "jwks_url" in given:
                _check_jwks_url(given["jwks_url"])
                details["jwks_url"] = redacted_url(given["jwks_url"])
            if given.get("default_role") == "project_admin":
                details["grantsProjectAdmin"] = True
            assignments = "".join(
                f"{name} = %s::jsonb, " if name == "claim_mappings" else f"{name} = %s, " for name in given
            )
            params = [orjson.dumps(v).decode() if n == "claim_mappings" else v for n, v in given.items()]
            async with self._database.as_owner() as cur:
                if given:
                    await cur.execute(
                        f"update auth.jwt_providers set {assignments}updated_at = now() "
                        f"where provider_key = %s returning {_COLUMNS}",
                        (*params, provider_key),
                    )
                else:
                    await cur.execute(
                        f"select {_COLUMNS} from auth.jwt_providers where provider_key = %s", (provider_key,)
                    )
                row = await cur.fetchone()
                if row is None:
                    raise not_found()
                await audit.record(cur, actor, "UPDATE_JWT_PROVIDER", MODULE, details)
        await self._external.reload()
        return provider_json(row)

    async def delete(self, actor: Actor, provider_key: str) -> None:
        """The provider; its tokens are refused from the next request on (in other processes, within
        moments: the table's notification)."""
        details: dict[str, Any] = {"provider_key": provider_key}
        async with audit.refusals(self._database, actor, "DELETE_JWT_PROVIDER", MODULE, details):
            require_person(actor, _AGENT_REFUSAL, _ASK_A_PERSON)
            async with self._database.as_owner() as cur:
                await cur.execute(
                    "delete from auth.jwt_providers where provider_key = %s returning issuer", (provider_key,)
                )
                row = await cur.fetchone()
                if row is None:
                    raise not_found()
                details["issuer"] = row["issuer"]
                await audit.record(cur, actor, "DELETE_JWT_PROVIDER", MODULE, details)
        await self._external.reload()
