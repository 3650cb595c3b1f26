"""Account flows: sign-up, sign-in (password or emailed code), refresh, email verification, password reset.

Every function takes an `AuthContext` (no HTTP objects) and returns what the route turns into a response.
Messages never tell whether an address has an account, except where InsForge's contract says so (sign-up of
an existing address answers 409).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

from psycopg.rows import DictRow
from pydantic import BaseModel, ConfigDict, Field, field_validator

from kilnbase.auth import auth_config, mailer, users
from kilnbase.auth.mailer import PendingEmail
from kilnbase.auth.redirects import is_allowed_redirect
from kilnbase.auth.services import AuthServices
from kilnbase.auth.sessions import (
    IssuedTokens,
    Subject,
    relax_durability,
    reused_error,
    revoke_all_for_subject,
    unauthorized,
)
from kilnbase.auth.validation import normalize_email
from kilnbase.db.session import Database
from kilnbase.http.errors import ApiError
from kilnbase.keys.secret_box import SecretBox


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")


class _WithEmail(_Strict):
    email: str

    @field_validator("email")
    @classmethod
    def _email(cls, value: str) -> str:
        return normalize_email(value)


class SignUp(_WithEmail):
    password: str = Field(max_length=1024)
    name: str | None = Field(None, min_length=1, max_length=100)
    redirectTo: str | None = Field(None, max_length=2048)
    autoConfirm: bool | None = None


class PasswordSignIn(_WithEmail):
    password: str = Field(max_length=1024)


class CodeSignIn(_WithEmail):
    otp: str = Field(pattern=r"^\d{6}$")
    name: str | None = Field(None, min_length=1, max_length=100)


class EmailOnly(_WithEmail):
    redirectTo: str | None = Field(None, max_length=2048)


class EmailCode(_WithEmail):
    otp: str = Field(pattern=r"^\d{6}$")


class ResetCodeExchange(_WithEmail):
    code: str = Field(pattern=r"^\d{6}$")


class PasswordReset(_Strict):
    newPassword: str = Field(max_length=1024)
    otp: str = Field(min_length=1, max_length=256)


@dataclass(frozen=True)
class AuthContext:
    db: Database
    services: AuthServices
    box: SecretBox
    base_url: str
    client_type: str
    ip: str | None
    user_agent: str | None


@dataclass(frozen=True)
class SessionResult:
    user: dict[str, Any]
    tokens: IssuedTokens | None
    require_verification: bool = False
    pending: PendingEmail | None = None


def user_subject(row: DictRow) -> Subject:
    return Subject(
        kind="user", subject=str(row["id"]), email=row["email"], role="authenticated", user_id=str(row["id"])
    )


def _weak_password(problems: list[str]) -> ApiError:
    return ApiError(
        400,
        "AUTH_WEAK_PASSWORD",
        "Password must contain " + ", ".join(problems) + ".",
        "Choose a password that meets the project's password policy (GET /api/auth/public-config).",
    )


def _check_redirect(url: str | None, config: DictRow, *, required: bool) -> str | None:
    if url is None:
        if required:
            raise ApiError(400, "INVALID_INPUT", "redirectTo is required when links are sent by email.")
        return None
    if not is_allowed_redirect(url, list(config["allowed_redirect_urls"])):
        raise ApiError(
            400,
            "INVALID_INPUT",
            "redirectTo is not in the allowed redirect URLs.",
            "Add it to allowedRedirectUrls with PUT /api/auth/config.",
        )
    return url


def with_query(url: str, params: dict[str, str]) -> str:
    parts = urlsplit(url)
    query = (parts.query + "&" if parts.query else "") + urlencode(params)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))


async def _issue(ctx: AuthContext, cur: Any, row: DictRow) -> IssuedTokens:
    await relax_durability(cur)
    return await ctx.services.sessions.issue(
        cur, user_subject(row), client_type=ctx.client_type, ip=ctx.ip, user_agent=ctx.user_agent
    )


async def _verification_email(
    ctx: AuthContext, cur: Any, config: DictRow, email: str, redirect_to: str | None
) -> PendingEmail | None:
    codes = ctx.services.codes
    if config["verify_email_method"] == "link":
        issued = await codes.new_link_token(cur, email, "VERIFY_EMAIL", redirect_to)
        link = f"{ctx.base_url}/api/auth/email/verify-link?{urlencode({'token': issued.secret})}"
        values: dict[str, Any] = {"link": link, "expires_in_minutes": issued.minutes}
        return await mailer.prepare(cur, ctx.box, "email-verification-link", email, values)
    issued = await codes.new_code(cur, email, "VERIFY_EMAIL")
    values = {"code": issued.secret, "expires_in_minutes": issued.minutes}
    return await mailer.prepare(cur, ctx.box, "email-verification-code", email, values)


async def sign_up(ctx: AuthContext, body: SignUp, *, caller_is_admin: bool) -> SessionResult:
    config = await auth_config.read(ctx.db)
    if config["disable_signup"] and not caller_is_admin:
        raise ApiError(
            403, "FORBIDDEN", "Sign-up is disabled for this project.", "Ask an admin to create the user."
        )
    problems = auth_config.password_problems(config, body.password)
    if problems:
        raise _weak_password(problems)
    auto_confirm = bool(body.autoConfirm) and caller_is_admin
    needs_verification = config["require_email_verification"] and not auto_confirm
    redirect_to = _check_redirect(
        body.redirectTo, config, required=needs_verification and config["verify_email_method"] == "link"
    )
    password_hash = await ctx.services.passwords.hash(body.password)
    async with ctx.db.as_owner() as cur:
        row = await users.create(
            cur, email=body.email, password_hash=password_hash, name=body.name, email_verified=auto_confirm
        )
        if needs_verification:
            pending = await _verification_email(ctx, cur, config, body.email, redirect_to)
            return SessionResult(users.user_json(row), None, require_verification=True, pending=pending)
        if caller_is_admin:
            return SessionResult(users.user_json(row), None)
        tokens = await _issue(ctx, cur, row)
    return SessionResult(users.user_json(row), tokens)


async def sign_in_with_password(ctx: AuthContext, body: PasswordSignIn) -> SessionResult:
    async with ctx.db.as_owner() as cur:
        row = await users.by_email(cur, body.email)
    check = await ctx.services.passwords.check(row["password"] if row else None, body.password)
    if row is None or not check.ok:
        raise ApiError(
            401, "AUTH_INVALID_CREDENTIALS", "Invalid email or password.", "Check the email and password."
        )
    config = await auth_config.read(ctx.db)
    if config["require_email_verification"] and not row["email_verified"]:
        raise ApiError(
            403,
            "AUTH_NEED_VERIFICATION",
            "Email verification is required before signing in.",
            "Verify the email (POST /api/auth/email/send-verification sends a new code or link).",
        )
    async with ctx.db.as_owner() as cur:
        if check.new_hash:
            await users.set_password(cur, str(row["id"]), check.new_hash)
        tokens = await _issue(ctx, cur, row)
    return SessionResult(users.user_json(row), tokens)


async def sign_in_with_code(ctx: AuthContext, body: CodeSignIn) -> SessionResult:
    await ctx.services.codes.redeem_code(ctx.db, body.email, "SIGN_IN", body.otp)
    config = await auth_config.read(ctx.db)
    async with ctx.db.as_owner() as cur:
        row = await users.by_email(cur, body.email, lock=True)
        if row is None:
            if config["disable_signup"]:
                raise ApiError(403, "FORBIDDEN", "Sign-up is disabled for this project.")
            row = await users.create(
                cur, email=body.email, password_hash=None, name=body.name, email_verified=True
            )
        elif not row["email_verified"]:
            await users.mark_verified(cur, str(row["id"]))
            row = await users.by_id(cur, str(row["id"]))
            assert row is not None
        tokens = await _issue(ctx, cur, row)
    return SessionResult(users.user_json(row), tokens)


async def refresh(ctx: AuthContext, refresh_token: str) -> SessionResult:
    """Rotate in one transaction; a reused token revokes its family (committed), then fails."""
    sessions = ctx.services.sessions
    async with ctx.db.as_owner() as cur:
        redeemed = await sessions.redeem(cur, refresh_token, "user")
        if redeemed is not None:
            family_id, subject = redeemed
            row = await users.by_id(cur, subject)
            if row is None:
                raise unauthorized("The user of this session no longer exists.")
            await relax_durability(cur)
            tokens = await sessions.issue(
                cur,
                user_subject(row),
                client_type=ctx.client_type,
                family_id=family_id,
                ip=ctx.ip,
                user_agent=ctx.user_agent,
            )
    if redeemed is None:
        raise reused_error()
    assert row is not None
    return SessionResult(users.user_json(row), tokens)


async def send_sign_in_code(ctx: AuthContext, body: EmailOnly) -> PendingEmail | None:
    config = await auth_config.read(ctx.db)
    async with ctx.db.as_owner() as cur:
        if config["disable_signup"] and await users.by_email(cur, body.email) is None:
            return None
        issued = await ctx.services.codes.new_code(cur, body.email, "SIGN_IN")
        values = {"code": issued.secret, "expires_in_minutes": issued.minutes}
        return await mailer.prepare(cur, ctx.box, "request-otp", body.email, values)


async def send_verification(ctx: AuthContext, body: EmailOnly) -> tuple[str, PendingEmail | None]:
    config = await auth_config.read(ctx.db)
    method: str = config["verify_email_method"]
    redirect_to = _check_redirect(body.redirectTo, config, required=method == "link")
    async with ctx.db.as_owner() as cur:
        row = await users.by_email(cur, body.email)
        if row is None or row["email_verified"]:
            return method, None
        return method, await _verification_email(ctx, cur, config, body.email, redirect_to)


async def verify_email_with_code(ctx: AuthContext, body: EmailCode) -> SessionResult:
    await ctx.services.codes.redeem_code(ctx.db, body.email, "VERIFY_EMAIL", body.otp)
    async with ctx.db.as_owner() as cur:
        row = await users.by_email(cur, body.email, lock=True)
        if row is None:
            raise ApiError(400, "INVALID_INPUT", "Invalid or expired verification code.")
        await users.mark_verified(cur, str(row["id"]))
        row = await users.by_id(cur, str(row["id"]))
        assert row is not None
        tokens = await _issue(ctx, cur, row)
    return SessionResult(users.user_json(row), tokens)


async def verify_email_with_link(ctx: AuthContext, token: str) -> str | None:
    """The URL to send the browser to (success or error), or None when the token is unknown."""
    async with ctx.db.as_owner() as cur:
        try:
            redeemed = await ctx.services.codes.redeem_token(cur, "VERIFY_EMAIL", token)
        except ApiError:
            redeemed = None
            spent = await ctx.services.codes.spent_token_redirect(cur, "VERIFY_EMAIL", token)
        if redeemed is not None:
            row = await users.by_email(cur, redeemed.email, lock=True)
            if row is not None:
                await users.mark_verified(cur, str(row["id"]))
    if redeemed is None:
        return _link_failed(spent, "verify_email", "Invalid or expired verification link")
    if redeemed.redirect_to is None:
        return None
    return with_query(redeemed.redirect_to, {"insforge_status": "success", "insforge_type": "verify_email"})


def _link_failed(redirect_to: str | None, kind: str, reason: str) -> str | None:
    if redirect_to is None:
        return None
    return with_query(
        redirect_to, {"insforge_status": "error", "insforge_type": kind, "insforge_error": reason}
    )


async def send_reset_password(ctx: AuthContext, body: EmailOnly) -> tuple[str, PendingEmail | None]:
    config = await auth_config.read(ctx.db)
    method: str = config["reset_password_method"]
    redirect_to = _check_redirect(body.redirectTo, config, required=method == "link")
    codes = ctx.services.codes
    async with ctx.db.as_owner() as cur:
        if await users.by_email(cur, body.email) is None:
            return method, None
        if method == "link":
            issued = await codes.new_link_token(cur, body.email, "RESET_PASSWORD", redirect_to)
            link = f"{ctx.base_url}/api/auth/email/reset-password-link?{urlencode({'token': issued.secret})}"
            values: dict[str, Any] = {"link": link, "expires_in_minutes": issued.minutes}
            return method, await mailer.prepare(cur, ctx.box, "reset-password-link", body.email, values)
        issued = await codes.new_code(cur, body.email, "RESET_PASSWORD")
        values = {"code": issued.secret, "expires_in_minutes": issued.minutes}
        return method, await mailer.prepare(cur, ctx.box, "reset-password-code", body.email, values)


async def exchange_reset_code(ctx: AuthContext, body: ResetCodeExchange) -> tuple[str, datetime]:
    await ctx.services.codes.redeem_code(ctx.db, body.email, "RESET_PASSWORD", body.code)
    async with ctx.db.as_owner() as cur:
        issued = await ctx.services.codes.new_link_token(cur, body.email, "RESET_PASSWORD", None)
    return issued.secret, issued.expires_at


async def reset_password(ctx: AuthContext, body: PasswordReset) -> None:
    config = await auth_config.read(ctx.db)
    problems = auth_config.password_problems(config, body.newPassword)
    if problems:
        raise _weak_password(problems)
    async with ctx.db.as_owner() as cur:
        if await ctx.services.codes.peek_token(cur, "RESET_PASSWORD", body.otp) is None:
            raise ApiError(
                400, "INVALID_INPUT", "Invalid or expired reset token.", "Request a new reset email."
            )
    password_hash = await ctx.services.passwords.hash(body.newPassword)
    async with ctx.db.as_owner() as cur:
        redeemed = await ctx.services.codes.redeem_token(cur, "RESET_PASSWORD", body.otp)
        row = await users.by_email(cur, redeemed.email, lock=True)
        if row is None:
            raise ApiError(400, "INVALID_INPUT", "Invalid or expired reset token.")
        await users.set_password(cur, str(row["id"]), password_hash)
        await users.mark_verified(cur, str(row["id"]))
        await revoke_all_for_subject(cur, str(row["id"]))


async def reset_password_link(ctx: AuthContext, token: str) -> str | None:
    async with ctx.db.as_owner() as cur:
        found = await ctx.services.codes.peek_token(cur, "RESET_PASSWORD", token)
        spent = None if found else await ctx.services.codes.spent_token_redirect(cur, "RESET_PASSWORD", token)
    if found is None:
        return _link_failed(spent, "reset_password", "Invalid or expired password reset link")
    if found.redirect_to is None:
        return None
    return with_query(
        found.redirect_to, {"token": token, "insforge_status": "ready", "insforge_type": "reset_password"}
    )
