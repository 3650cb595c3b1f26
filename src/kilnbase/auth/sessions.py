"""Stored sessions: access tokens (RS256, short) and refresh tokens (one row each in `auth.sessions`).

Unlike InsForge, whose refresh tokens are stateless, every refresh token is recorded, so logging out,
"sign out everywhere" and a password reset really end sessions. Rotation keeps a family: a refresh token
used a second time means someone else holds a copy, so the whole family is revoked (RFC 9700 4.14.2).

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
from psycopg.rows import DictRow

from kilnbase.config import AuthSettings
from kilnbase.db.session import Database
from kilnbase.http.errors import ApiError
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


class SessionService:
    def __init__(self, keys: ProjectKeys, tokens: TokenService, settings: AuthSettings) -> None:
        self._settings = settings
        self._tokens = tokens
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

    def _refresh_jwt(self, who: Subject, family_id: str) -> str:
        now = int(time.time())
        claims = {
            "sub": who.subject,
            "type": "refresh",
            "iss": "insforge",
            "kind": who.kind,
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
        refresh = self._refresh_jwt(who, family)
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

    async def redeem(
        self, cur: AsyncCursor[DictRow], refresh_token: str, kind: SessionKind
    ) -> tuple[str, str] | None:
        """Mark a refresh token used and return (family_id, subject), inside the caller's transaction.

        None means the token had already been used: its whole family is now revoked, and the caller must let
        the transaction commit (so the revocation sticks) and then refuse the request.
        """
        claims = self.decode_refresh(refresh_token, kind)
        await cur.execute(
            "select id, family_id::text, subject, used_at, revoked_at, expires_at < now() as expired "
            "from auth.sessions where token_hash = %s and kind = %s for update",
            (_digest(refresh_token), kind),
        )
        row = await cur.fetchone()
        if row is None or row["family_id"] != claims["sid"]:
            raise unauthorized("Unknown refresh token.")
        if row["revoked_at"] is not None:
            raise unauthorized("This session has been signed out.")
        if row["expired"]:
            raise ApiError(401, "AUTH_TOKEN_EXPIRED", "The refresh token has expired.", "Sign in again.")
        if row["used_at"] is not None:
            await revoke_family(cur, row["family_id"])
            return None
        await cur.execute("update auth.sessions set used_at = now() where id = %s", (row["id"],))
        return row["family_id"], row["subject"]

    async def family_is_live(self, db: Database, family_id: str) -> bool:
        async with db.as_owner() as cur:
            await cur.execute(
                "select exists (select 1 from auth.sessions where family_id = %s and revoked_at is null "
                "and expires_at > now()) as live",
                (family_id,),
            )
            row = await cur.fetchone()
        return bool(row and row["live"])


def reused_error() -> ApiError:
    return unauthorized("This refresh token was already used; the session has been revoked for safety.")


async def relax_durability(cur: AsyncCursor[DictRow]) -> None:
    """Commit this transaction without waiting for the WAL flush: used for issuing and rotating sessions
    only. A crash in the next fraction of a second can forget the new session (its user signs in again);
    it can never resurrect a revoked one, because revocations keep synchronous commits."""
    await cur.execute("set local synchronous_commit = off")


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


async def revoke_family(cur: AsyncCursor[DictRow], family_id: str) -> int:
    await cur.execute(
        "update auth.sessions set revoked_at = now() where family_id = %s and revoked_at is null",
        (family_id,),
    )
    return cur.rowcount


async def end_sessions(
    cur: AsyncCursor[DictRow],
    kind: SessionKind,
    *,
    refresh_token: str | None,
    family_id: str | None,
    everywhere: bool,
) -> bool:
    """Revoke the family of `refresh_token` (else `family_id`); with `everywhere`, every session of its
    subject. False when neither identifies a session of this kind."""
    if not refresh_token and not family_id:
        return False
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
        return False
    await revoke_family(cur, found["family_id"])
    if everywhere:
        await revoke_all_for_subject(cur, found["subject"])
    return True


async def revoke_all_for_subject(cur: AsyncCursor[DictRow], subject: str) -> int:
    await cur.execute(
        "update auth.sessions set revoked_at = now() where subject = %s and revoked_at is null", (subject,)
    )
    return cur.rowcount
