"""Device authorization (InsForge's `/api/auth/device/...`, in the spirit of RFC 8628): how a CLI, an editor
plugin or a coding agent on a machine without a browser signs a user in.

1. `create`: the device asks for a code pair: a device code (64 hex characters, 256 bits, the device's secret)
   and a user code (`ABCDE-FGHIJ`, which a person reads and types), valid for 15 minutes.
2. The person opens the verification page (`/auth/device?user_code=...`), signs in, and sees what the device
   said about itself. `lookup` with their access token binds the code to them; `approve` or `deny` decides.
3. `exchange`: the device polls with its device code, every `interval` seconds, until the code is approved,
   then receives a session of the approving user, minted exactly as a sign-in mints one (a refresh-token
   family in `auth.sessions`, ended by sign-out and password resets like any other).

What keeps it safe:

- Codes are stored as keyed hashes only (HMAC-SHA256 with a key derived from the project's JWT secret), and
  found by that hash through a unique index: no stored secret is ever compared, so there is nothing whose
  comparison time could leak. The device code is never logged, and never a rate-limit key (its hash is).
- A user code is bound to the first user who looks it up signed in, or approves it; another user can then
  neither approve, deny nor read it (403), so a code shown on one person's screen cannot be taken over.
- The exchange locks the row (`FOR UPDATE`), mints the session and marks the code consumed in one
  transaction, committed durably: two polls racing with an approved code get one session between them, and
  the other gets `already_used`.
- Only a signed-in user approves or denies: an agent key (or the API key) is refused, since a device session
  carries a person's identity, which no key may hand out.
- Rate limits (`http/rate_limit.py`, across processes): starts per address, user-code lookups, approvals and
  denials per address together (what keeps the ~49-bit user code from being guessed), polls per address, and
  polls of one device code faster than its interval, answered `slow_down` as RFC 8628 says (InsForge's 2 per
  10 seconds).

Expired and consumed rows are deleted by the server's background work (`prune_expired`).

Statuses and refusals follow InsForge's service: on the user-code routes 404 (no such code), 403 (bound to
another user, or denied), 409 (consumed), 410 (expired), 428 (still pending); on `/token` the OAuth-style
`authorization_pending` 428, `access_denied` 403, `expired_token` 400, `already_used` 400 and `invalid_grant`
400. Unlike InsForge, a signed-in lookup of a code bound to someone else is refused (InsForge answers it with
the device's details), and a deleted user's codes are deleted with them.
"""

from __future__ import annotations

import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
import psycopg
from psycopg import AsyncCursor
from psycopg.rows import DictRow
from pydantic import Field, field_validator

from kilnbase import audit
from kilnbase.auth import users
from kilnbase.auth.accounts import SessionResult, user_subject
from kilnbase.auth.parts import AuthParts
from kilnbase.auth.validation import StrictBody, storable
from kilnbase.http.errors import ApiError
from kilnbase.identity.actor import Actor
from kilnbase.identity.principal import CredentialKind

MODULE = "AUTH"
#: How long a code pair lives, and how often the device may poll (InsForge's).
EXPIRES_IN_SECONDS = 15 * 60
POLL_INTERVAL_SECONDS = 5
#: The polls of one device code allowed per `2 * POLL_INTERVAL_SECONDS` (InsForge's 2 per 10 seconds): a
#: client polling at its interval never meets it, whatever the phase of the window.
POLLS_PER_TWO_INTERVALS = 2
#: No 0/O, 1/I/L: what a person reads off one screen and types on another; still InsForge's `[A-Z0-9]`.
USER_CODE_ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"
USER_CODE_PATTERN = re.compile(r"^[A-Z0-9]{5}-[A-Z0-9]{5}$")
DEVICE_CODE_PATTERN = re.compile(r"^[A-Fa-f0-9]{64}$")
GRANT_TYPE = "urn:ietf:params:oauth:grant-type:device_code"
#: New codes tried when one collides with a stored one (a user code collides once in ~10^14).
CREATE_ATTEMPTS = 5
#: The session a device receives: its refresh token in the body, as for any client that is not a browser.
DEVICE_CLIENT_TYPE = "desktop"

_COLUMNS = (
    "id::text, status, expires_at, expires_at <= now() as expired, poll_interval_seconds, "
    "approved_by_user_id::text, client_context"
)
_PRUNE = (
    "delete from auth.device_authorizations where id in (select id from auth.device_authorizations "
    "where expires_at < now() - interval '1 hour' limit %s)"
)


def _update_bound(assignments: str, statuses: str) -> str:
    """An update of a live code's row by the user `%(user)s`: only while the code is in one of `statuses`,
    unexpired, unconsumed, and bound to no one else."""
    return (
        f"update auth.device_authorizations set {assignments} where user_code_hash = %(hash)s "
        f"and status in ({statuses}) and consumed_at is null and expires_at > now() "
        f"and (approved_by_user_id is null or approved_by_user_id = %(user)s) returning {_COLUMNS}"
    )


#: A signed-in lookup binds the code to its user; approving binds it too, denying leaves it as it is.
_BIND = _update_bound(
    "status = 'authenticated', approved_by_user_id = coalesce(approved_by_user_id, %(user)s)",
    "'pending_authorization', 'authenticated'",
)
_APPROVE = _update_bound(
    "status = 'approved', approved_by_user_id = coalesce(approved_by_user_id, %(user)s)",
    "'pending_authorization', 'authenticated', 'approved'",
)
_DENY = _update_bound("status = 'denied'", "'pending_authorization', 'authenticated', 'approved', 'denied'")

_CODE_HINT = "Send the code the device shows, such as ABCDE-FGHIJ."
_START_AGAIN = "Start the device sign-in again (POST /api/auth/device/authorizations)."


def normalize_user_code(value: str) -> str:
    """What a person typed, as a code: case and separators do not matter (RFC 8628 6.1), so `abcde fghij`
    is `ABCDE-FGHIJ`; anything else is left for the format check to refuse."""
    cleaned = re.sub(r"[^A-Z0-9]", "", value.upper())
    return f"{cleaned[:5]}-{cleaned[5:]}" if len(cleaned) == 10 else value


class DeviceStart(StrictBody):
    """What the device says about itself, shown to the person approving it (all optional, as in InsForge;
    Kilnbase bounds them)."""

    deviceName: str | None = Field(None, min_length=1, max_length=200)
    hostname: str | None = Field(None, min_length=1, max_length=255)
    platform: str | None = Field(None, min_length=1, max_length=100)

    _storable = field_validator("deviceName", "hostname", "platform")(storable)


class UserCodeBody(StrictBody):
    userCode: str = Field(max_length=64)

    @field_validator("userCode")
    @classmethod
    def _format(cls, value: str) -> str:
        code = normalize_user_code(value)
        if not USER_CODE_PATTERN.match(code):
            raise ValueError("Invalid user code format")
        return code


class DeviceTokenRequest(StrictBody):
    deviceCode: str = Field(max_length=256)
    grantType: str = Field(max_length=256)

    @field_validator("deviceCode")
    @classmethod
    def _device_code(cls, value: str) -> str:
        if len(value) != 64:
            raise ValueError("Invalid device code length")
        if not DEVICE_CODE_PATTERN.match(value):
            raise ValueError("Invalid device code format")
        return value.lower()

    @field_validator("grantType")
    @classmethod
    def _grant_type(cls, value: str) -> str:
        if value != GRANT_TYPE:
            raise ValueError(f'Invalid literal value, expected "{GRANT_TYPE}"')
        return value


@dataclass(frozen=True)
class StartedDevice:
    """A new code pair: the only time either code exists in the clear."""

    device_code: str
    user_code: str
    expires_in: int
    interval: int


@dataclass(frozen=True)
class DeviceView:
    """A code's state, as the user-code routes answer it; `client_context` only for its bound user."""

    status: str
    expires_at: str
    client_context: dict[str, Any] | None
    show_context: bool

    def json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"status": self.status, "expiresAt": self.expires_at}
        if self.show_context:
            body["clientContext"] = self.client_context
        return body


def _iso(value: datetime) -> str:
    """A timestamp as InsForge's answers write it (`2026-03-24T10:00:00.000Z`)."""
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _view(row: DictRow, *, show_context: bool, status: str | None = None) -> DeviceView:
    context = row["client_context"]
    return DeviceView(
        status=status or row["status"],
        expires_at=_iso(row["expires_at"]),
        client_context=dict(context) if isinstance(context, dict) else None,
        show_context=show_context,
    )


def _new_user_code() -> str:
    raw = "".join(secrets.choice(USER_CODE_ALPHABET) for _ in range(10))
    return f"{raw[:5]}-{raw[5:]}"


def signed_in_user(actor: Actor) -> str | None:
    """The id of the person behind `actor`: a user's own access token, never a key or an agent's token."""
    principal = actor.principal
    if (
        principal.kind is CredentialKind.JWT
        and principal.agent is None
        and principal.db_role == "authenticated"
        and principal.user_id
    ):
        return principal.user_id
    return None


class DeviceAuthorizations:
    def __init__(self, parts: AuthParts) -> None:
        self.parts = parts
        self._key = hmac.new(
            parts.keys.jwt_secret.encode(), b"kilnbase:device-authorization:v1", "sha256"
        ).digest()

    def _hash(self, code: str) -> str:
        return hmac.new(self._key, code.encode(), "sha256").hexdigest()

    @property
    def verification_uri(self) -> str:
        return f"{self.parts.base_url.rstrip('/')}/auth/device"

    # --- 1. the device starts ------------------------------------------------------------------------------

    async def create(self, actor: Actor, body: DeviceStart) -> StartedDevice:
        await self.parts.limit(
            f"device-create:{actor.ip}",
            self.parts.settings.device_authorization_limit,
            "Too many device authorization creation requests from this IP. Please try again in {window}.",
        )
        context = body.model_dump(exclude_none=True) or None
        for attempt in range(1, CREATE_ATTEMPTS + 1):
            device_code, user_code = secrets.token_hex(32), _new_user_code()
            try:
                async with self.parts.database.as_owner() as cur:
                    await cur.execute(
                        "insert into auth.device_authorizations (device_code_hash, user_code_hash, "
                        "expires_at, poll_interval_seconds, client_context) "
                        "values (%s, %s, now() + make_interval(secs => %s), %s, %s::jsonb)",
                        (
                            self._hash(device_code),
                            self._hash(user_code),
                            EXPIRES_IN_SECONDS,
                            POLL_INTERVAL_SECONDS,
                            orjson.dumps(context).decode() if context else None,
                        ),
                    )
            except psycopg.errors.UniqueViolation:
                if attempt == CREATE_ATTEMPTS:
                    raise
                continue
            return StartedDevice(device_code, user_code, EXPIRES_IN_SECONDS, POLL_INTERVAL_SECONDS)
        raise AssertionError("unreachable")  # (the last attempt returns or raises)

    # --- 2. the person: look up, approve, deny -------------------------------------------------------------

    async def _limit_user_code(self, actor: Actor) -> None:
        await self.parts.limit(
            f"device-user-code:{actor.ip}",
            self.parts.settings.device_user_code_limit,
            "Too many device authorization code submissions from this IP. Please try again in {window}.",
        )

    async def lookup(self, actor: Actor, user_code: str) -> DeviceView:
        """A code's state. Signed in as a user, it also binds the code to them (if no one else holds it) and
        shows what the device said about itself; anyone else sees only the status and expiry."""
        await self._limit_user_code(actor)
        user_id = signed_in_user(actor)
        code_hash = self._hash(user_code)
        if user_id is not None:
            return await self._decide(actor, code_hash, user_id, _BIND, action=None)
        async with self.parts.database.as_owner() as cur:
            await cur.execute(
                f"select {_COLUMNS} from auth.device_authorizations where user_code_hash = %s", (code_hash,)
            )
            row = await cur.fetchone()
            if row is None:
                raise _not_found()
            if row["expired"] and row["status"] not in ("denied", "consumed", "expired"):
                await self._expire(cur, row["id"])
                return _view(row, show_context=False, status="expired")
        return _view(row, show_context=False)

    async def approve(self, actor: Actor, user_code: str) -> DeviceView:
        """The signed-in user lets the device sign in as them; audited."""
        return await self._decision(actor, user_code, "approve", "APPROVE_DEVICE_AUTHORIZATION", _APPROVE)

    async def deny(self, actor: Actor, user_code: str) -> DeviceView:
        """The signed-in user refuses the device; its next poll answers `access_denied`. Audited."""
        return await self._decision(actor, user_code, "deny", "DENY_DEVICE_AUTHORIZATION", _DENY)

    async def _decision(
        self, actor: Actor, user_code: str, verb: str, action: str, statement: str
    ) -> DeviceView:
        user_id = await self._person(actor, verb, action)
        await self._limit_user_code(actor)
        return await self._decide(actor, self._hash(user_code), user_id, statement, action=action)

    async def _person(self, actor: Actor, verb: str, action: str) -> str:
        """The signed-in user who decides; 401 without a credential, 403 (audited) for a key, an agent's
        token or an admin's."""
        user_id = signed_in_user(actor)
        if user_id is not None:
            return user_id
        principal = actor.principal
        if principal.kind in (CredentialKind.NONE, CredentialKind.ANON_KEY):
            raise ApiError(
                401,
                "AUTH_INVALID_CREDENTIALS",
                "User not authenticated",
                f"Sign in as the user the device should act for, then {verb} with that access token.",
            )
        refusal = ApiError(
            403,
            "FORBIDDEN",
            f"Only a signed-in user can {verb} a device authorization.",
            "A device session carries a person's identity: the person signs in (POST /api/auth/sessions) "
            f"and sends their own access token. API keys and agent keys cannot {verb} devices.",
        )
        details = {"error": refusal.message}
        await audit.record(self.parts.database, actor, action, MODULE, details, outcome="refused")
        raise refusal

    async def _decide(
        self, actor: Actor, code_hash: str, user_id: str, statement: str, *, action: str | None
    ) -> DeviceView:
        """Run `statement` (an update of the code's row, for `user_id`); when it changed nothing, the refusal
        the row's state calls for. `action`, when given, is the audit entry of the change."""
        refusal: ApiError | None = None
        async with self.parts.database.as_owner() as cur:
            await cur.execute(statement, {"hash": code_hash, "user": user_id})
            row = await cur.fetchone()
            if row is not None:
                if action is not None:
                    await audit.record(cur, actor, action, MODULE, {"deviceAuthorizationId": row["id"]})
                return _view(row, show_context=True)
            await cur.execute(
                f"select {_COLUMNS} from auth.device_authorizations where user_code_hash = %s", (code_hash,)
            )
            current = await cur.fetchone()
            refusal = await self._refusal(cur, current, user_id)
        if action is not None:
            details = {"deviceAuthorizationId": current["id"] if current else None, "error": refusal.message}
            await audit.record(self.parts.database, actor, action, MODULE, details, outcome="refused")
        raise refusal

    async def _refusal(self, cur: AsyncCursor[DictRow], row: DictRow | None, user_id: str) -> ApiError:
        """Why a user-code action did not apply, in InsForge's order; an expired code is marked so."""
        if row is None:
            return _not_found()
        bound = row["approved_by_user_id"]
        if bound is not None and bound != user_id:
            return ApiError(
                403,
                "FORBIDDEN",
                "Device authorization bound to another user",
                "Another user has signed in to approve this code; the device should start again.",
            )
        if row["status"] == "denied":
            return ApiError(
                403,
                "AUTH_DEVICE_AUTHORIZATION_DENIED",
                "Device authorization denied",
                "This code was denied; the device must start again.",
            )
        if row["status"] == "consumed":
            return ApiError(
                409,
                "AUTH_DEVICE_AUTHORIZATION_CONSUMED",
                "Device authorization already consumed",
                "The device has signed in with this code already.",
            )
        if row["expired"] or row["status"] == "expired":
            await self._expire(cur, row["id"])
            return ApiError(
                410,
                "AUTH_DEVICE_AUTHORIZATION_EXPIRED",
                "Device authorization expired",
                f"Codes live {EXPIRES_IN_SECONDS // 60} minutes. {_START_AGAIN}",
            )
        return ApiError(
            428,
            "AUTH_DEVICE_AUTHORIZATION_PENDING",
            "Device authorization pending",
            "The code is approved already and waits for the device to poll.",
        )

    @staticmethod
    async def _expire(cur: AsyncCursor[DictRow], row_id: str) -> None:
        await cur.execute(
            "update auth.device_authorizations set status = 'expired' "
            "where id = %s and status not in ('expired', 'consumed', 'denied')",
            (row_id,),
        )

    # --- 3. the device polls -------------------------------------------------------------------------------

    async def exchange(self, actor: Actor, body: DeviceTokenRequest) -> SessionResult:
        """The approving user's session, once, for the device code; until then, why not (OAuth's words)."""
        code_hash = self._hash(body.deviceCode)
        await self.parts.limit(f"device-poll-ip:{actor.ip}", self.parts.settings.device_poll_ip_limit)
        too_soon = await self.parts.limiter.hit(
            f"device-poll:{actor.ip}:{code_hash[:32]}", POLLS_PER_TWO_INTERVALS, 2 * POLL_INTERVAL_SECONDS
        )
        if too_soon is not None:
            raise ApiError(
                400,
                "slow_down",
                "Slow down polling this device authorization.",
                f"Poll at most every {POLL_INTERVAL_SECONDS} seconds (the interval the start answered); "
                "add 5 seconds to the interval after each slow_down.",
            )
        async with self.parts.database.as_owner() as cur:
            await cur.execute(
                f"select {_COLUMNS} from auth.device_authorizations where device_code_hash = %s for update",
                (code_hash,),
            )
            row = await cur.fetchone()
            refusal = _poll_refusal(row)
            if refusal is not None:
                raise refusal
            assert row is not None
            user = await users.by_id(cur, row["approved_by_user_id"])
            if user is None:
                raise _invalid_grant()
            # The session is minted as a sign-in mints it, but committed durably (no `relax_durability`):
            # the code's single use must survive a crash as surely as the session does.
            tokens = await self.parts.sessions.issue(
                cur,
                user_subject(user),
                client_type=DEVICE_CLIENT_TYPE,
                ip=actor.ip,
                user_agent=actor.user_agent,
            )
            await cur.execute(
                "update auth.device_authorizations set status = 'consumed', consumed_at = now() "
                "where id = %s",
                (row["id"],),
            )
            details = {"deviceAuthorizationId": row["id"], "userId": str(user["id"])}
            await audit.record(cur, actor, "DEVICE_SIGN_IN", MODULE, details)
        return SessionResult(users.user_json(user), tokens)

    # --- background ----------------------------------------------------------------------------------------

    async def prune_expired(self, batch: int = 10_000) -> int:
        """Delete the codes that expired over an hour ago, whatever became of them (a late poll meanwhile
        still hears `expired_token`); how many went."""
        return await self.parts.database.delete_in_batches(_PRUNE, batch=batch)


def _not_found() -> ApiError:
    return ApiError(404, "NOT_FOUND", "Device authorization not found", _CODE_HINT)


def _invalid_grant() -> ApiError:
    return ApiError(400, "invalid_grant", "Device authorization not found.", _START_AGAIN)


def _poll_refusal(row: DictRow | None) -> ApiError | None:
    """Why a poll gets no session yet (None: it does), in InsForge's order."""
    if row is None:
        return _invalid_grant()
    if row["status"] == "denied":
        return ApiError(403, "access_denied", "Device authorization was denied.", _START_AGAIN)
    if row["status"] == "consumed":
        return ApiError(
            400,
            "already_used",
            "Device authorization has already been used.",
            "A device code signs in once; the session it gave is the device's. " + _START_AGAIN,
        )
    if row["expired"] or row["status"] == "expired":
        return ApiError(400, "expired_token", "Device authorization expired.", _START_AGAIN)
    if row["status"] != "approved" or row["approved_by_user_id"] is None:
        return ApiError(
            428,
            "authorization_pending",
            "Device authorization is still pending approval.",
            f"Poll again in {POLL_INTERVAL_SECONDS} seconds, until the user approves or denies the code.",
        )
    return None
