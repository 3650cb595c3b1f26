"""Stored sessions: access tokens (ES256, short) and refresh tokens (one row each in `auth.sessions`).

Unlike InsForge, whose refresh tokens are stateless, every refresh token is recorded, so logging out,
"sign out everywhere" and a password reset really end sessions. Rotation keeps a family: a refresh token
used a second time means someone else holds a copy, so the whole family is revoked (RFC 9700 4.14.2).
An access token carries its family as `sid`; when a family ends, every process refuses its access tokens
within moments (`identity/ended_sessions.py`), and this process at once (`SessionService.ended`).

A rotation is one statement and one round trip (`rotate`): mark the token used, insert its successor and
read the user, committed without waiting for the WAL flush. Only a refused token takes a second look, to
say why and to revoke a family whose token came back.

The refresh token is a JWT (the SSR helpers of `@insforge/sdk` read its `exp`) signed with a key derived
from the JWT secret for this purpose only, so it can never pass as an access token. The CSRF token for web
clients is an HMAC of the refresh token, as InsForge computes it: a cross-site page can make the browser
send the cookie but cannot read it, so it cannot produce the header.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
import uuid
from dataclasses import dataclass
from typing import Any, Literal

import jwt
from psycopg import AsyncCursor
from psycopg.rows import DictRow, dict_row

from kilnbase.auth.users import USER_COLUMNS
from kilnbase.config import AuthSettings
from kilnbase.db.session import Database
from kilnbase.http.errors import ApiError
from kilnbase.identity.ended_sessions import EndedSessions
from kilnbase.keys.access_tokens import TokenService
from kilnbase.keys.project_keys import ProjectKeys

SessionKind = Literal["user", "admin"]
CLIENT_TYPES = frozenset({"web", "mobile", "desktop", "server"})


def unauthorized(message: str) -> ApiError:
    return ApiError(401, "AUTH_UNAUTHORIZED", message, "Sign in again to get a new session.")


@dataclass(frozen=True)
class IssuedTokens:
    access_token: str
    refresh_token: str
    csrf_token: str
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
    subject: str
    refresh_token: str
    user: DictRow | None


_ROTATE = f"""
with rotated as (
    update auth.sessions set used_at = now()
    where token_hash = %(old)s and kind = %(kind)s and family_id = %(family)s
      and used_at is null and revoked_at is null and expires_at > now()
    returning family_id, kind, user_id, subject
), successor as (
    insert into auth.sessions (family_id, kind, user_id, subject, token_hash, client_type, expires_at,
                               user_agent, ip_address)
    select family_id, kind, user_id, subject, %(new)s, %(client_type)s,
           now() + make_interval(secs => %(seconds)s), %(user_agent)s, %(ip)s::inet
    from rotated
)
select r.subject, set_config('synchronous_commit', 'off', true) as relaxed, {USER_COLUMNS}
from rotated r left join auth.users u on u.id = r.user_id
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
        self._csrf_key = keys.jwt_secret.encode()

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
        return hmac.new(self._csrf_key, refresh_token.encode(), "sha256").hexdigest()

    def csrf_matches(self, header: str | None, refresh_token: str) -> bool:
        if not header:
            return False
        return hmac.compare_digest(header.encode(), self.csrf_token(refresh_token).encode())

    def _refresh_jwt(self, subject: str, kind: SessionKind, family_id: str) -> str:
        now = int(time.time())
        claims = {
            "sub": subject,
            "type": "refresh",
            "iss": "insforge",
            "kind": kind,
            "sid": family_id,
            "jti": secrets.token_urlsafe(16),
            "iat": now,
            "exp": now + self._settings.refresh_token_seconds,
        }
        return jwt.encode(claims, self._refresh_key, algorithm="HS256")

    def decode_refresh(self, token: str, kind: SessionKind) -> dict[str, Any]:
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                self._refresh_key,
                algorithms=["HS256"],
                issuer="insforge",
                options={"require": ["exp", "sub", "sid"]},
            )
        except jwt.ExpiredSignatureError:
            raise ApiError(
                401, "AUTH_TOKEN_EXPIRED", "The refresh token has expired.", "Sign in again."
            ) from None
        except jwt.PyJWTError:
            raise unauthorized("Invalid refresh token.") from None
        if claims.get("type") != "refresh" or claims.get("kind") != kind:
            raise unauthorized("Invalid refresh token.")
        return claims

    async def issue(
        self,
        cur: AsyncCursor[DictRow],
        who: Subject,
        *,
        client_type: str,
        family_id: str | None = None,
        ip: str | None = None,
        user_agent: str | None = None,
    ) -> IssuedTokens:
        family = family_id or str(uuid.uuid4())
        refresh = self._refresh_jwt(who.subject, who.kind, family)
        await cur.execute(
            "insert into auth.sessions (family_id, kind, user_id, subject, token_hash, client_type, "
            "expires_at, "
            "user_agent, ip_address) values (%s, %s, %s, %s, %s, %s, now() + make_interval(secs => %s), %s, "
            "%s::inet)",
            (
                family,
                who.kind,
                who.user_id,
                who.subject,
                _digest(refresh),
                client_type,
                self._settings.refresh_token_seconds,
                (user_agent or "")[:512] or None,
                ip,
            ),
        )
        return IssuedTokens(
            access_token=self.access_token(who, family),
            refresh_token=refresh,
            csrf_token=self.csrf_token(refresh),
            session_id=family,
        )

    def tokens_for(self, who: Subject, rotation: Rotation) -> IssuedTokens:
        """The access token (and CSRF token) that go with a rotation's successor."""
        return IssuedTokens(
            access_token=self.access_token(who, rotation.family_id),
            refresh_token=rotation.refresh_token,
            csrf_token=self.csrf_token(rotation.refresh_token),
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
        """Spend `refresh_token` and record its successor, in one statement; or raise why it was refused.

        A token already spent revokes its whole family (committed) before the refusal: someone else holds a
        copy. Two requests racing with the same token serialise on its row; the second finds it spent."""
        claims = self.decode_refresh(refresh_token, kind)
        family_id, subject = str(claims["sid"]), str(claims["sub"])
        successor = self._refresh_jwt(subject, kind, family_id)
        async with self._database.owner_pool.connection() as conn:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(
                _ROTATE,
                {
                    "old": _digest(refresh_token),
                    "kind": kind,
                    "family": family_id,
                    "new": _digest(successor),
                    "client_type": client_type,
                    "seconds": self._settings.refresh_token_seconds,
                    "user_agent": (user_agent or "")[:512] or None,
                    "ip": ip,
                },
            )
            row = await cur.fetchone()
        if row is None:
            raise await self._refusal(refresh_token, kind)
        return Rotation(family_id, row["subject"], successor, row if row["id"] is not None else None)

    async def _refusal(self, refresh_token: str, kind: SessionKind) -> ApiError:
        """Why a token that decoded was not rotated; a spent one revokes its family on the way."""
        async with self._database.as_owner() as cur:
            await cur.execute(
                "select family_id::text, used_at, revoked_at, expires_at < now() as expired "
                "from auth.sessions where token_hash = %s and kind = %s for update",
                (_digest(refresh_token), kind),
            )
            row = await cur.fetchone()
            ended: list[str] = []
            if row is not None and row["used_at"] is not None and row["revoked_at"] is None:
                ended = await revoke_family(cur, row["family_id"])
        if row is None:
            return unauthorized("Unknown refresh token.")
        if row["revoked_at"] is not None:
            return unauthorized("This session has been signed out.")
        if row["expired"]:
            return ApiError(401, "AUTH_TOKEN_EXPIRED", "The refresh token has expired.", "Sign in again.")
        if row["used_at"] is not None:
            self.ended(ended)
            return reused_error()
        return unauthorized("Unknown refresh token.")

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
    return hashlib.sha256(token.encode()).digest()


async def revoke_family(cur: AsyncCursor[DictRow], family_id: str) -> list[str]:
    """Revoke one family; the families ended (it, or none if it had ended already)."""
    await cur.execute(
        "update auth.sessions set revoked_at = now() where family_id = %s and revoked_at is null",
        (family_id,),
    )
    return [family_id] if cur.rowcount else []


async def end_sessions(
    cur: AsyncCursor[DictRow],
    kind: SessionKind,
    *,
    refresh_token: str | None,
    family_id: str | None,
    everywhere: bool,
) -> list[str] | None:
    """Revoke the family of `refresh_token` (else `family_id`); with `everywhere`, every session of its
    subject. The families ended, or None when neither identifies a session of this kind."""
    if not refresh_token and not family_id:
        return None
    if refresh_token:
        await cur.execute(
            "select family_id::text, subject from auth.sessions where token_hash = %s and kind = %s",
            (_digest(refresh_token), kind),
        )
    else:
        await cur.execute(
            "select family_id::text, subject from auth.sessions where family_id = %s and kind = %s limit 1",
            (family_id, kind),
        )
    found = await cur.fetchone()
    if found is None:
        return None
    if everywhere:
        return await revoke_all_for_subject(cur, found["subject"])
    return await revoke_family(cur, found["family_id"])


async def revoke_all_for_subject(cur: AsyncCursor[DictRow], subject: str) -> list[str]:
    """Revoke every live session of `subject`; the families ended."""
    await cur.execute(
        "update auth.sessions set revoked_at = now() where subject = %s and revoked_at is null "
        "returning family_id::text",
        (subject,),
    )
    return sorted({row["family_id"] for row in await cur.fetchall()})
