"""Stored sessions: access tokens (ES256, short) and refresh tokens (one row per session in `auth.sessions`).

Unlike InsForge, whose refresh tokens are stateless, every session is recorded, so logging out, "sign out
everywhere" and a password reset really end sessions. A session is a family of refresh tokens: each use of
one returns its successor, and a token used a second time means someone else holds a copy, so the whole
family is revoked (RFC 9700 4.14.2). An access token carries its family as `sid`; when a family ends, every
process refuses its access tokens within moments (`identity/ended_sessions.py`), and this process at once
(`SessionService.ended`).

A family is one row, and its refresh tokens are numbered (`gen` in the token, `generation` in the row): the
token presented must carry the row's number, which the rotation then bumps. A smaller number is a token
already spent. Only numbers are stored, no token: the signature says the number is ours. A rotation is one
statement and one round trip (`rotate`): bump the number and read the user, an update in place that touches
no index (a HOT update), committed without waiting for the WAL flush. Only a refused token takes a second
look, to say why and to revoke a family whose token came back. Families from before the numbering (one row
per token, found by the token's hash) are rotated once the old way and continue numbered (`_rotate_legacy`).

The refresh token is an HS256 JWT (the SSR helpers of `@insforge/sdk` read its `exp`) signed with a key
derived from the JWT secret for this purpose only, so it can never pass as an access token. The CSRF token
for web clients is an HMAC of the refresh token, as InsForge computes it: a cross-site page can make the
browser send the cookie but cannot read it, so it cannot produce the header. Its key is derived from the JWT
secret too (`csrf_key`), never the secret itself, so one secret is not used for two purposes.
"""

from __future__ import annotations

import hashlib
import hmac
import time
import uuid
from dataclasses import dataclass
from typing import Any, Literal, cast

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from psycopg import AsyncCursor
from psycopg.rows import DictRow, dict_row

from kilnbase.auth import users
from kilnbase.auth.users import USER_JSON
from kilnbase.config import AuthSettings
from kilnbase.db.session import Database
from kilnbase.http.errors import ApiError
from kilnbase.identity.ended_sessions import EndedSessions
from kilnbase.keys.access_tokens import TokenService
from kilnbase.keys.compact_jws import MalformedToken, sign_hs256, verify_hs256
from kilnbase.keys.project_keys import ProjectKeys

SessionKind = Literal["user", "admin"]
CLIENT_TYPES = frozenset({"web", "mobile", "desktop", "server"})
#: HKDF's `info` for the CSRF key: names the purpose, so no other key derived from the secret can equal it.
CSRF_KEY_LABEL = b"kilnbase:csrf-token:v1"


def csrf_key(jwt_secret: str) -> bytes:
    """The key of web clients' CSRF tokens, derived from the JWT secret (HKDF-SHA256, labelled).

    Until this key existed, the CSRF HMAC was keyed with the JWT secret itself, which also signs HS256
    tokens. A server upgraded past that change refuses the CSRF tokens it handed out before it: a web client
    holding one in flight gets 403 on its next refresh or logout, until it signs in again. Sessions and
    refresh tokens themselves stay valid."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=CSRF_KEY_LABEL).derive(
        jwt_secret.encode()
    )


def unauthorized(reason: str) -> ApiError:
    """InsForge's refusal of a refresh token ("Invalid or expired refresh token"); Kilnbase's reason (unknown,
    expired, signed out, reused) goes into `nextActions`."""
    return ApiError(
        401,
        "AUTH_UNAUTHORIZED",
        "Invalid or expired refresh token",
        f"{reason} Sign in again to get a new session.",
    )


@dataclass(frozen=True)
class IssuedTokens:
    access_token: str
    refresh_token: str
    session_id: str


@dataclass(frozen=True)
class Subject:
    """Who a session belongs to: a user row, or the root admin (no row)."""

    kind: SessionKind
    subject: str
    email: str
    role: str
    user_id: str | None


@dataclass(frozen=True)
class Rotation:
    """A refresh token rotated: its family, its successor, and the user row (None for the root admin)."""

    family_id: str
    refresh_token: str
    user: DictRow | None


#: The family's row (`token_hash is null`: the numbered kind) at the presented number: bump it, read the user,
#: only what a refresh answers with (id and email for the access token, the JSON), never the password hash.
_ROTATE = f"""
with rotated as (
    update auth.sessions set generation = generation + 1, used_at = now(), client_type = %(client_type)s,
        expires_at = now() + make_interval(secs => %(seconds)s), user_agent = %(user_agent)s,
        ip_address = %(ip)s::inet
    where family_id = %(family)s and token_hash is null and generation = %(generation)s and kind = %(kind)s
      and revoked_at is null and expires_at > now()
    returning user_id
)
select set_config('synchronous_commit', 'off', true) as relaxed, u.id, u.email, {USER_JSON} as user_json
from rotated r left join auth.users u on u.id = r.user_id
"""

_INSERT_FAMILY = (
    "insert into auth.sessions (family_id, kind, user_id, subject, generation, client_type, expires_at, "
    "user_agent, ip_address) values (%s, %s, %s, %s, %s, %s, now() + make_interval(secs => %s), %s, %s::inet)"
)


#: Sessions whose refresh token expired at least this long ago, a batch at a time: by then every token of
#: theirs (access tokens live shorter than the refresh token they came with) has long expired, so the row
#: answers nothing a token could still ask; a refresh with it is refused by its own expiry first.
_PRUNE = """
delete from auth.sessions where ctid = any(array(
    select ctid from auth.sessions where expires_at < now() - interval '1 hour' limit %s
))
"""


class SessionService:
    def __init__(
        self,
        keys: ProjectKeys,
        tokens: TokenService,
        settings: AuthSettings,
        database: Database,
        ended_sessions: EndedSessions,
    ) -> None:
        self._settings = settings
        self._tokens = tokens
        self._database = database
        self._ended_sessions = ended_sessions
        self._refresh_key = hmac.new(
            keys.jwt_secret.encode(), b"kilnbase:refresh-token:v1", "sha256"
        ).digest()
        self._csrf_key = csrf_key(keys.jwt_secret)

    async def prune_expired(self, batch: int = 10_000) -> int:
        """Delete the sessions that expired over an hour ago (signed out or not), in batches of `batch` so
        no one statement holds many rows; how many went. Without it the table keeps every session ever
        started."""
        return await self._database.delete_in_batches(_PRUNE, batch=batch)

    def access_token(self, who: Subject, session_id: str) -> str:
        claims: dict[str, Any] = {
            "sub": who.subject,
            "email": who.email,
            "role": who.role,
            "aud": "authenticated" if who.role == "authenticated" else "insforge",
            "sid": session_id,
        }
        return self._tokens.sign(claims, expires_in=self._settings.access_token_seconds)

    def csrf_token(self, refresh_token: str) -> str:
        """The token a web client echoes as X-CSRF-Token: only web clients get one, so it is made only
        for their responses."""
        return hmac.digest(self._csrf_key, refresh_token.encode(), "sha256").hex()

    def csrf_matches(self, header: str | None, refresh_token: str) -> bool:
        if not header:
            return False
        return hmac.compare_digest(header.encode(), self.csrf_token(refresh_token).encode())

    def _refresh_jwt(self, subject: str, kind: SessionKind, family_id: str, generation: int) -> str:
        now = int(time.time())
        claims = {
            "sub": subject,
            "type": "refresh",
            "iss": "insforge",
            "kind": kind,
            "sid": family_id,
            "gen": generation,
            "iat": now,
            "exp": now + self._settings.refresh_token_seconds,
        }
        return sign_hs256(claims, self._refresh_key)

    def decode_refresh(self, token: str, kind: SessionKind, *, expired_too: bool = False) -> dict[str, Any]:
        """The claims of a refresh token of `kind` that this project signed and (unless `expired_too`) that
        has not expired."""
        try:
            claims = verify_hs256(token, self._refresh_key)
        except MalformedToken:
            raise unauthorized("The refresh token is malformed or was not signed by this project.") from None
        expires, generation = claims.get("exp"), claims.get("gen", 0)
        if (
            not _is_number(expires)
            or not _is_number(generation)
            or claims.get("iss") != "insforge"
            or claims.get("type") != "refresh"
            or claims.get("kind") != kind
            or not isinstance(claims.get("sub"), str)
            or not isinstance(claims.get("sid"), str)
        ):
            raise unauthorized("The refresh token is not one of this project's.")
        if cast(float, expires) <= time.time() and not expired_too:
            raise unauthorized("The refresh token has expired.")
        return claims

    async def issue(
        self,
        cur: AsyncCursor[DictRow],
        who: Subject,
        *,
        client_type: str,
        ip: str | None = None,
        user_agent: str | None = None,
    ) -> IssuedTokens:
        """A new session (family) for `who`, inside the caller's transaction."""
        family = str(uuid.uuid4())
        refresh = self._refresh_jwt(who.subject, who.kind, family, 0)
        await cur.execute(
            _INSERT_FAMILY,
            (
                family,
                who.kind,
                who.user_id,
                who.subject,
                0,
                client_type,
                self._settings.refresh_token_seconds,
                _user_agent(user_agent),
                ip,
            ),
        )
        return IssuedTokens(
            access_token=self.access_token(who, family),
            refresh_token=refresh,
            session_id=family,
        )

    def tokens_for(self, who: Subject, rotation: Rotation) -> IssuedTokens:
        """The access token that goes with a rotation's successor."""
        return IssuedTokens(
            access_token=self.access_token(who, rotation.family_id),
            refresh_token=rotation.refresh_token,
            session_id=rotation.family_id,
        )

    async def rotate(
        self,
        refresh_token: str,
        kind: SessionKind,
        *,
        client_type: str,
        ip: str | None,
        user_agent: str | None,
    ) -> Rotation:
        """Spend `refresh_token` and return its successor, in one statement; or raise why it was refused.

        A token already spent revokes its whole family (committed) before the refusal: someone else holds a
        copy. Two requests racing with the same token serialise on the family's row; the second finds the
        number moved on."""
        claims = self.decode_refresh(refresh_token, kind)
        if "gen" not in claims:
            return await self._rotate_legacy(refresh_token, claims, kind, client_type, ip, user_agent)
        family_id, generation = claims["sid"], int(claims["gen"])
        successor = self._refresh_jwt(claims["sub"], kind, family_id, generation + 1)
        async with self._database.owner_pool.connection() as conn:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(
                _ROTATE,
                {
                    "family": family_id,
                    "generation": generation,
                    "kind": kind,
                    "client_type": client_type,
                    "seconds": self._settings.refresh_token_seconds,
                    "user_agent": _user_agent(user_agent),
                    "ip": ip,
                },
            )
            row = await cur.fetchone()
        if row is None:
            raise await self._refusal(family_id, generation, kind)
        return Rotation(family_id, successor, row if row["id"] is not None else None)

    async def _refusal(self, family_id: str, generation: int, kind: SessionKind) -> ApiError:
        """Why a token that decoded was not rotated; a spent one revokes its family on the way."""
        async with self._database.as_owner() as cur:
            await cur.execute(
                "select generation, revoked_at, expires_at < now() as expired from auth.sessions "
                "where family_id = %s and token_hash is null and kind = %s for update",
                (family_id, kind),
            )
            row = await cur.fetchone()
            spent = row is not None and row["revoked_at"] is None and row["generation"] > generation
            ended = await revoke_family(cur, family_id) if spent else []
        return self._refused(row, spent, ended)

    def _refused(self, row: DictRow | None, spent: bool, ended: list[str]) -> ApiError:
        if row is None:
            return unauthorized("Unknown refresh token.")
        if row["revoked_at"] is not None:
            return unauthorized("This session has been signed out.")
        if row["expired"]:
            return unauthorized("The refresh token has expired.")
        if spent:
            self.ended(ended)
            return reused_error()
        return unauthorized("Unknown refresh token.")

    async def _rotate_legacy(
        self,
        refresh_token: str,
        claims: dict[str, Any],
        kind: SessionKind,
        client_type: str,
        ip: str | None,
        user_agent: str | None,
    ) -> Rotation:
        """A token from before the numbering (a row of its own, found by its hash): spend it, and continue
        its family as one numbered row."""
        family_id = claims["sid"]
        async with self._database.as_owner() as cur:
            await cur.execute(
                "select family_id::text, kind, user_id, subject, used_at, revoked_at, expires_at < now() as "
                "expired from auth.sessions where token_hash = %s and kind = %s for update",
                (_digest(refresh_token), kind),
            )
            row = await cur.fetchone()
            spent = row is not None and row["used_at"] is not None and row["revoked_at"] is None
            ended = await revoke_family(cur, family_id) if spent else []
            if (
                row is not None
                and row["family_id"] == family_id
                and not (spent or row["revoked_at"] or row["expired"])
            ):
                await cur.execute(
                    "update auth.sessions set used_at = now() where token_hash = %s",
                    (_digest(refresh_token),),
                )
                await cur.execute(
                    _INSERT_FAMILY,
                    (
                        family_id,
                        kind,
                        row["user_id"],
                        row["subject"],
                        1,
                        client_type,
                        self._settings.refresh_token_seconds,
                        _user_agent(user_agent),
                        ip,
                    ),
                )
                user = await users.by_id(cur, str(row["user_id"])) if row["user_id"] else None
                return Rotation(family_id, self._refresh_jwt(row["subject"], kind, family_id, 1), user)
        if row is not None and row["family_id"] != family_id:
            row = None
        raise self._refused(row, spent, ended)

    async def end(
        self,
        cur: AsyncCursor[DictRow],
        kind: SessionKind,
        *,
        refresh_token: str | None,
        family_id: str | None,
        everywhere: bool,
    ) -> list[str] | None:
        """Revoke the family of `refresh_token` (any of its tokens, even expired; else `family_id`); with
        `everywhere`, every session of its subject. The families ended, or None when neither identifies a
        session of this kind."""
        if refresh_token:
            try:
                family_id = self.decode_refresh(refresh_token, kind, expired_too=True)["sid"]
            except ApiError:
                return None
        if not family_id:
            return None
        await cur.execute(
            "select subject from auth.sessions where family_id = %s and kind = %s limit 1", (family_id, kind)
        )
        found = await cur.fetchone()
        if found is None:
            return None
        if everywhere:
            return await revoke_all_for_subject(cur, found["subject"])
        return await revoke_family(cur, family_id)

    def ended(self, family_ids: list[str]) -> None:
        """Tell this process at once that these families ended (others hear it from the database)."""
        self._ended_sessions.add(family_ids)


def reused_error() -> ApiError:
    return unauthorized("This refresh token was already used; the session has been revoked for safety.")


async def relax_durability(cur: AsyncCursor[DictRow]) -> None:
    """Commit this transaction without waiting for the WAL flush: used for issuing and rotating sessions
    only. A crash in the next fraction of a second can forget the new session (its user signs in again);
    it can never resurrect a revoked one, because revocations keep synchronous commits."""
    await cur.execute("set local synchronous_commit = off")


def _digest(token: str) -> bytes:
    """How tokens from before the numbering were stored (and are still found)."""
    return hashlib.sha256(token.encode()).digest()


def _user_agent(value: str | None) -> str | None:
    return (value or "")[:512] or None


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


async def revoke_family(cur: AsyncCursor[DictRow], family_id: str) -> list[str]:
    """Revoke one family; the families ended (it, or none if it had ended already)."""
    await cur.execute(
        "update auth.sessions set revoked_at = now() where family_id = %s and revoked_at is null",
        (family_id,),
    )
    return [family_id] if cur.rowcount else []


async def revoke_all_for_subject(cur: AsyncCursor[DictRow], subject: str) -> list[str]:
    """Revoke every live session of `subject`; the families ended. A device approval of theirs that no
    device has redeemed yet (`device_authorizations.py`) is a session still to come, so it is denied too:
    signing out everywhere, or a password reset, must not be followed by a device's new session."""
    try:
        user_id = uuid.UUID(subject)
    except ValueError:  # (the root admin's subject: no device approves as it)
        user_id = None
    if user_id is not None:
        await cur.execute(
            "update auth.device_authorizations set status = 'denied' where approved_by_user_id = %s "
            "and status = 'approved' and consumed_at is null",
            (user_id,),
        )
    await cur.execute(
        "update auth.sessions set revoked_at = now() where subject = %s and revoked_at is null "
        "returning family_id::text",
        (subject,),
    )
    return sorted({row["family_id"] for row in await cur.fetchall()})
