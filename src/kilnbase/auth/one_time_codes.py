"""One-time codes and link tokens for email flows (`auth.email_otps`, one live row per address and purpose).

Six-digit codes are stored as an HMAC keyed with a secret derived from the JWT secret: a leaked table alone
does not give the codes away (InsForge uses bcrypt for the same reason; an HMAC costs microseconds instead of
tens of milliseconds). Link tokens carry 256 bits and are stored as SHA-256, so they can be looked up.
Every wrong guess counts; after `otp_max_attempts` the code is burnt and a new one must be requested.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from psycopg import AsyncCursor
from psycopg.rows import DictRow

from kilnbase.config import AuthSettings
from kilnbase.db.session import Database
from kilnbase.http.errors import ApiError
from kilnbase.keys.project_keys import ProjectKeys

Purpose = Literal["VERIFY_EMAIL", "RESET_PASSWORD", "SIGN_IN"]


@dataclass(frozen=True)
class Redeemed:
    email: str
    redirect_to: str | None


@dataclass(frozen=True)
class Issued:
    secret: str
    expires_at: datetime
    minutes: int


def _invalid(kind: str = "code") -> ApiError:
    return ApiError(
        400,
        "INVALID_INPUT",
        f"Invalid or expired verification {kind}",
        "Request a new one and use it once, before it expires.",
    )


class OneTimeCodes:
    def __init__(self, keys: ProjectKeys, settings: AuthSettings) -> None:
        self._key = hmac.new(keys.jwt_secret.encode(), b"kilnbase:email-otp:v1", "sha256").digest()
        self._settings = settings

    def _code_hash(self, email: str, purpose: str, code: str) -> str:
        return hmac.new(self._key, f"{purpose}:{email}:{code}".encode(), "sha256").hexdigest()

    def _minutes(self, purpose: Purpose, link: bool) -> int:
        s = self._settings
        if purpose == "RESET_PASSWORD":
            return s.reset_link_expiry_minutes if link else s.reset_code_expiry_minutes
        if purpose == "VERIFY_EMAIL" and link:
            return s.verify_link_expiry_minutes
        return s.code_expiry_minutes

    async def _store(
        self,
        cur: AsyncCursor[DictRow],
        *,
        email: str,
        purpose: Purpose,
        otp_type: str,
        otp_hash: str,
        minutes: int,
        redirect_to: str | None,
    ) -> datetime:
        await cur.execute(
            "insert into auth.email_otps (email, purpose, otp_type, otp_hash, expires_at, redirect_to, "
            "last_sent_at) values (%s, %s, %s, %s, now() + make_interval(mins => %s), %s, now()) "
            "on conflict (email, purpose) do update set otp_type = excluded.otp_type, "
            "otp_hash = excluded.otp_hash, expires_at = excluded.expires_at, redirect_to = "
            "excluded.redirect_to, "
            "consumed_at = null, attempts_count = 0, last_sent_at = now(), updated_at = now() "
            "returning expires_at",
            (email, purpose, otp_type, otp_hash, minutes, redirect_to),
        )
        row = await cur.fetchone()
        assert row is not None
        expires_at: datetime = row["expires_at"]
        return expires_at

    async def new_code(
        self, cur: AsyncCursor[DictRow], email: str, purpose: Purpose, redirect_to: str | None = None
    ) -> Issued:
        code = f"{secrets.randbelow(1_000_000):06d}"
        minutes = self._minutes(purpose, link=False)
        expires_at = await self._store(
            cur,
            email=email,
            purpose=purpose,
            otp_type="NUMERIC_CODE",
            otp_hash=self._code_hash(email, purpose, code),
            minutes=minutes,
            redirect_to=redirect_to,
        )
        return Issued(code, expires_at, minutes)

    async def new_link_token(
        self, cur: AsyncCursor[DictRow], email: str, purpose: Purpose, redirect_to: str | None
    ) -> Issued:
        token = secrets.token_hex(32)
        minutes = self._minutes(purpose, link=True)
        expires_at = await self._store(
            cur,
            email=email,
            purpose=purpose,
            otp_type="HASH_TOKEN",
            otp_hash=hashlib.sha256(token.encode()).hexdigest(),
            minutes=minutes,
            redirect_to=redirect_to,
        )
        return Issued(token, expires_at, minutes)

    async def redeem_code(self, db: Database, email: str, purpose: Purpose, code: str) -> Redeemed:
        """Consume the code in its own transaction (a wrong guess must be counted even though we fail)."""
        failure: ApiError | None = None
        async with db.as_owner() as cur:
            await cur.execute(
                "select id, otp_type, otp_hash, redirect_to, attempts_count, consumed_at is not null as "
                "consumed, "
                "expires_at < now() as expired from auth.email_otps where email = %s and purpose = %s for "
                "update",
                (email, purpose),
            )
            row = await cur.fetchone()
            candidate = self._code_hash(email, purpose, code)
            if row is None or row["otp_type"] != "NUMERIC_CODE" or row["consumed"] or row["expired"]:
                failure = _invalid()
            elif not hmac.compare_digest(candidate, row["otp_hash"]):
                attempts = row["attempts_count"] + 1
                burnt = attempts >= self._settings.otp_max_attempts
                await cur.execute(
                    "update auth.email_otps set attempts_count = %s, "
                    "consumed_at = case when %s then now() else consumed_at end, updated_at = now() where "
                    "id = %s",
                    (attempts, burnt, row["id"]),
                )
                failure = (
                    ApiError(
                        400,
                        "INVALID_INPUT",
                        "Invalid or expired verification code",
                        "Too many wrong attempts: this code is no longer valid. Request a new code.",
                    )
                    if burnt
                    else _invalid()
                )
            else:
                await cur.execute(
                    "update auth.email_otps set consumed_at = now(), updated_at = now() where id = %s",
                    (row["id"],),
                )
        if failure is not None:
            raise failure
        assert row is not None
        return Redeemed(email, row["redirect_to"])

    async def redeem_token(self, cur: AsyncCursor[DictRow], purpose: Purpose, token: str) -> Redeemed:
        await cur.execute(
            "update auth.email_otps set consumed_at = now(), updated_at = now() "
            "where purpose = %s and otp_hash = %s and otp_type = 'HASH_TOKEN' and consumed_at is null "
            "and expires_at > now() returning email, redirect_to",
            (purpose, hashlib.sha256(token.encode()).hexdigest()),
        )
        row = await cur.fetchone()
        if row is None:
            raise _invalid("token")
        return Redeemed(row["email"], row["redirect_to"])

    async def peek_token(self, cur: AsyncCursor[DictRow], purpose: Purpose, token: str) -> Redeemed | None:
        await cur.execute(
            "select email, redirect_to from auth.email_otps where purpose = %s and otp_hash = %s "
            "and otp_type = 'HASH_TOKEN' and consumed_at is null and expires_at > now()",
            (purpose, hashlib.sha256(token.encode()).hexdigest()),
        )
        row = await cur.fetchone()
        return Redeemed(row["email"], row["redirect_to"]) if row else None

    async def spent_token_redirect(
        self, cur: AsyncCursor[DictRow], purpose: Purpose, token: str
    ) -> str | None:
        """Where a used or expired link token wanted to go, so the browser can be told it failed."""
        await cur.execute(
            "select redirect_to from auth.email_otps where purpose = %s and otp_hash = %s",
            (purpose, hashlib.sha256(token.encode()).hexdigest()),
        )
        row = await cur.fetchone()
        return row["redirect_to"] if row else None
