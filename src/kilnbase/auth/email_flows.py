"""Email flows: sign-in codes, email verification (code or link), password reset (code, exchange, link).

The send methods answer the same, and in the same time, whether or not the address has an account: they
check what the request says and enforce the limits (per client address, and a cooldown per recipient, the
SMTP config's `minIntervalSeconds`), then hand everything that depends on the account, down to the delivery,
to the mailer's background task (`Mailer.later`).

Redeeming a code or link proves the address, which ends what an unverified owner set up
(`accounts.claim_address`); a password reset ends every session of the account.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import Field

from kilnbase.auth import auth_config, smtp_settings, users
from kilnbase.auth.accounts import (
    Accounts,
    SessionResult,
    check_redirect,
    claim_address,
    weak_password,
    with_query,
)
from kilnbase.auth.mailer import PendingEmail
from kilnbase.auth.parts import SEND_REFUSAL, VERIFY_REFUSAL, AuthParts
from kilnbase.auth.sessions import revoke_all_for_subject
from kilnbase.auth.validation import StrictBody, WithEmail
from kilnbase.http.errors import ApiError
from kilnbase.identity.actor import Actor


class EmailOnly(WithEmail):
    redirectTo: str | None = Field(None, max_length=2048)


class EmailCode(WithEmail):
    otp: str = Field(pattern=r"^\d{6}$")


class ResetCodeExchange(WithEmail):
    code: str = Field(pattern=r"^\d{6}$")


class PasswordReset(StrictBody):
    newPassword: str = Field(max_length=1024)
    otp: str = Field(min_length=1, max_length=256)


def _link_failed(redirect_to: str | None, kind: str, reason: str) -> str | None:
    if redirect_to is None:
        return None
    return with_query(
        redirect_to, {"insforge_status": "error", "insforge_type": kind, "insforge_error": reason}
    )


class EmailFlows:
    def __init__(self, parts: AuthParts, accounts: Accounts) -> None:
        self.parts = parts
        self.accounts = accounts

    async def _limit_sends(self, actor: Actor, email: str, what: str) -> None:
        """503 when no SMTP server could send `what` (it would be lost, while the answer said it was sent);
        then the limits on sending."""
        async with self.parts.database.as_owner() as cur:
            row = await smtp_settings.load(cur)
        if not smtp_settings.is_usable(row):
            raise smtp_settings.not_configured(what)
        settings = self.parts.settings
        await self.parts.limit(f"email-send:{actor.ip}", settings.email_send_limit, SEND_REFUSAL)
        interval = row["min_interval_seconds"] if row is not None else 60
        if interval > 0:
            await self.parts.cooldown(f"email-cooldown:{email}", interval)

    async def _limit_verifications(self, actor: Actor) -> None:
        await self.parts.limit(f"verify:{actor.ip}", self.parts.settings.verify_limit, VERIFY_REFUSAL)

    # --- sending -------------------------------------------------------------------------------------------

    async def send_sign_in_code(self, actor: Actor, body: EmailOnly) -> None:
        await self._limit_sends(actor, body.email, "a sign-in code")
        self.parts.mailer.later(lambda: self._sign_in_code(body.email))

    async def _sign_in_code(self, email: str) -> PendingEmail | None:
        config = await auth_config.read(self.parts.database)
        async with self.parts.database.as_owner() as cur:
            if config["disable_signup"] and await users.by_email(cur, email) is None:
                return None
            issued = await self.parts.codes.new_code(cur, email, "SIGN_IN")
            values = {"code": issued.secret, "expires_in_minutes": issued.minutes}
            return await self.parts.mailer.prepare(cur, "request-otp", email, values)

    async def send_verification(self, actor: Actor, body: EmailOnly) -> str:
        """Send a verification code or link (the project's method, returned) if the account needs one."""
        config = await auth_config.read(self.parts.database)
        method: str = config["verify_email_method"]
        redirect_to = check_redirect(body.redirectTo, config, required=method == "link")
        await self._limit_sends(actor, body.email, f"a verification {method}")
        self.parts.mailer.later(lambda: self._verification(body.email, redirect_to))
        return method

    async def _verification(self, email: str, redirect_to: str | None) -> PendingEmail | None:
        config = await auth_config.read(self.parts.database)
        async with self.parts.database.as_owner() as cur:
            row = await users.by_email(cur, email)
            if row is None or row["email_verified"]:
                return None
            return await self.accounts.verification_email(cur, config, email, redirect_to)

    async def send_reset_password(self, actor: Actor, body: EmailOnly) -> str:
        """Send a password reset code or link (the project's method, returned) if the account exists."""
        config = await auth_config.read(self.parts.database)
        method: str = config["reset_password_method"]
        redirect_to = check_redirect(
            body.redirectTo, config, required=method == "link", flow="password reset"
        )
        await self._limit_sends(actor, body.email, f"a password reset {method}")
        self.parts.mailer.later(lambda: self._reset(body.email, method, redirect_to))
        return method

    async def _reset(self, email: str, method: str, redirect_to: str | None) -> PendingEmail | None:
        async with self.parts.database.as_owner() as cur:
            if await users.by_email(cur, email) is None:
                return None
            link = "/api/auth/email/reset-password-link" if method == "link" else None
            return await self.accounts.code_or_link_email(
                cur,
                email,
                "RESET_PASSWORD",
                link_path=link,
                redirect_to=redirect_to,
                template="reset-password",
            )

    # --- verification --------------------------------------------------------------------------------------

    async def verify_email_with_code(self, actor: Actor, body: EmailCode, client_type: str) -> SessionResult:
        """Verify the address and sign its user in."""
        await self._limit_verifications(actor)
        await self.parts.codes.redeem_code(self.parts.database, body.email, "VERIFY_EMAIL", body.otp)
        config = await auth_config.read(self.parts.database)
        async with self.parts.database.as_owner() as cur:
            row = await users.by_email(cur, body.email, lock=True)
            if row is None:
                raise ApiError(
                    400,
                    "INVALID_INPUT",
                    "Invalid or expired verification code",
                    "Request a new code with POST /api/auth/email/send-verification.",
                )
            ended = await claim_address(cur, row, keep_password=config["require_email_verification"])
            row = await users.by_id(cur, str(row["id"]))
            assert row is not None
            tokens = await self.accounts.issue(cur, actor, row, client_type)
        self.parts.sessions.ended(ended)
        return SessionResult(users.user_json(row), tokens)

    async def verify_email_with_link(self, actor: Actor, token: str) -> str | None:
        """Where to send the browser (success or error), or None when the token is unknown."""
        await self._limit_verifications(actor)
        config = await auth_config.read(self.parts.database)
        ended: list[str] = []
        codes = self.parts.codes
        async with self.parts.database.as_owner() as cur:
            try:
                redeemed = await codes.redeem_token(cur, "VERIFY_EMAIL", token)
            except ApiError:
                redeemed = None
                spent = await codes.spent_token_redirect(cur, "VERIFY_EMAIL", token)
            if redeemed is not None:
                row = await users.by_email(cur, redeemed.email, lock=True)
                if row is not None:
                    keep = config["require_email_verification"]
                    ended = await claim_address(cur, row, keep_password=keep)
        self.parts.sessions.ended(ended)
        if redeemed is None:
            return _link_failed(spent, "verify_email", "Invalid or expired verification token")
        if redeemed.redirect_to is None:
            return None
        return with_query(
            redeemed.redirect_to, {"insforge_status": "success", "insforge_type": "verify_email"}
        )

    # --- password reset ------------------------------------------------------------------------------------

    async def exchange_reset_code(self, actor: Actor, body: ResetCodeExchange) -> tuple[str, datetime]:
        """Trade an emailed reset code for a reset token (InsForge's code flow, step 1)."""
        await self._limit_verifications(actor)
        codes = self.parts.codes
        await codes.redeem_code(self.parts.database, body.email, "RESET_PASSWORD", body.code)
        async with self.parts.database.as_owner() as cur:
            issued = await codes.new_link_token(cur, body.email, "RESET_PASSWORD", None)
        return issued.secret, issued.expires_at

    async def reset_password(self, actor: Actor, body: PasswordReset) -> None:
        """Set a new password with a reset token; every session of the account ends."""
        await self._limit_verifications(actor)
        config = await auth_config.read(self.parts.database)
        problems = auth_config.password_problems(config, body.newPassword)
        if problems:
            raise weak_password(config, problems)
        codes = self.parts.codes
        async with self.parts.database.as_owner() as cur:
            if await codes.peek_token(cur, "RESET_PASSWORD", body.otp) is None:
                raise ApiError(
                    400,
                    "INVALID_INPUT",
                    "Invalid or expired verification token",
                    "Request a new reset email.",
                )
        password_hash = await self.parts.passwords.hash(body.newPassword)
        async with self.parts.database.as_owner() as cur:
            redeemed = await codes.redeem_token(cur, "RESET_PASSWORD", body.otp)
            row = await users.by_email(cur, redeemed.email, lock=True)
            if row is None:
                raise ApiError(
                    400,
                    "INVALID_INPUT",
                    "Invalid or expired verification token",
                    "Request a new reset email with POST /api/auth/email/send-reset-password.",
                )
            user_id = str(row["id"])
            ended = await claim_address(cur, row, keep_password=False)
            await users.set_password(cur, user_id, password_hash)
            ended += await revoke_all_for_subject(cur, user_id)
        self.parts.sessions.ended(ended)

    async def reset_password_link(self, actor: Actor, token: str) -> str | None:
        """Where to send the browser with a reset link: the app, with the token; or None when unknown."""
        await self._limit_verifications(actor)
        codes = self.parts.codes
        async with self.parts.database.as_owner() as cur:
            found = await codes.peek_token(cur, "RESET_PASSWORD", token)
            spent = None if found else await codes.spent_token_redirect(cur, "RESET_PASSWORD", token)
        if found is None:
            return _link_failed(spent, "reset_password", "Invalid or expired verification token")
        if found.redirect_to is None:
            return None
        return with_query(
            found.redirect_to, {"token": token, "insforge_status": "ready", "insforge_type": "reset_password"}
        )
