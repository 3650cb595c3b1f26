"""Account flows: sign-up, sign-in (password or emailed code), refresh, sign-out, the current user, profiles.

Every method takes the `Actor` (for public flows, the anonymous principal with the client's address), owns its
transactions and enforces its rate limits, so the HTTP routes, and later the MCP tools and the CLI, only
parse and shape around these calls. An admin creating a user is recorded in the audit log.

Messages never tell whether an address has an account, except where InsForge's contract says so (sign-up of
an existing address answers 409).

Proving an address ends what an unverified owner set up (`claim_address`): whoever registered an address
without proving it (verification is off by default) may not be its owner, so once someone proves it, by an
emailed code or link or a provider that verified it, the password set before, the sessions from before and
the linked identities go. The one exception is the sign-up that the proof completes: when the project
requires verification, the password of an unverified account could never be used, and verifying keeps it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

import orjson
from psycopg import AsyncCursor
from psycopg.rows import DictRow
from pydantic import Field, field_validator

from kilnbase import audit
from kilnbase.auth import auth_config, smtp_settings, users
from kilnbase.auth.mailer import PendingEmail
from kilnbase.auth.one_time_codes import Purpose
from kilnbase.auth.parts import VERIFY_REFUSAL, AuthParts
from kilnbase.auth.redirects import is_allowed_redirect
from kilnbase.auth.sessions import (
    IssuedTokens,
    SessionKind,
    Subject,
    relax_durability,
    revoke_all_for_subject,
)
from kilnbase.auth.validation import UUID_PATTERN, StrictBody, WithEmail, storable
from kilnbase.http.errors import ADMIN_ONLY, ApiError
from kilnbase.identity.actor import Actor
from kilnbase.identity.principal import CredentialKind, Principal

MODULE = "AUTH"


class SignUp(WithEmail):
    password: str = Field(max_length=1024)
    name: str | None = Field(None, min_length=1, max_length=100)
    redirectTo: str | None = Field(None, max_length=2048)
    autoConfirm: bool | None = None

    _storable = field_validator("name", "redirectTo")(storable)


class PasswordSignIn(WithEmail):
    password: str = Field(max_length=1024)


class CodeSignIn(WithEmail):
    otp: str = Field(pattern=r"^\d{6}$")
    name: str | None = Field(None, min_length=1, max_length=100)

    _storable = field_validator("name")(storable)


#: A profile's largest size, as stored (its JSON text): a name, an avatar's URL, a bio and some preferences
#: fit many times over; files belong in storage. InsForge sets no bound (any JSON object, up to its 10 MB
#: body), and every profile is public: a bound keeps one user from storing megabytes for everyone to fetch.
PROFILE_MAX_BYTES = 64 * 1024
#: The largest body `PATCH /api/auth/profiles/current` reads: room for the `{"profile": ...}` around a
#: profile at the limit, and for a client's indentation, which the stored profile does not keep. Past it
#: the body is refused unread: only a profile over the limit could come in a body this large.
PROFILE_BODY_MAX_BYTES = 2 * PROFILE_MAX_BYTES


class ProfileUpdate(StrictBody):
    profile: dict[str, Any]

    @field_validator("profile")
    @classmethod
    def _size(cls, value: dict[str, Any]) -> dict[str, Any]:
        if len(value) > 100:
            raise ValueError("at most 100 fields")
        storable(value)
        return value


@dataclass(frozen=True)
class SessionResult:
    user: dict[str, Any]
    tokens: IssuedTokens | None
    require_verification: bool = False


def user_subject(row: DictRow) -> Subject:
    return Subject(
        kind="user", subject=str(row["id"]), email=row["email"], role="authenticated", user_id=str(row["id"])
    )


def weak_password(config: DictRow, problems: list[str]) -> ApiError:
    """InsForge's refusal of a password: every requirement of the policy, not only those missed."""
    return ApiError(
        400,
        "INVALID_INPUT",
        auth_config.password_requirements(config, too_long="at most 256 characters" in problems),
        "Choose a password that meets the project's password policy (GET /api/auth/public-config).",
    )


def signups_disabled() -> ApiError:
    return ApiError(
        403,
        "AUTH_SIGNUP_DISABLED",
        "User signups are disabled for this project.",
        "Ask an admin to create the user.",
    )


def check_redirect(
    url: str | None, config: DictRow, *, required: bool, flow: str = "email verification"
) -> str | None:
    """`url` if it is on the allow-list (or absent and not `required`); else InsForge's 400 (`flow` names
    what needs the link: "email verification" or "password reset")."""
    if url is None:
        if required:
            raise ApiError(
                400,
                "INVALID_INPUT",
                f"redirectTo is required when link-based {flow} is enabled",
                "Send redirectTo, a URL on the allowed redirect URLs (allowedRedirectUrls, PUT "
                "/api/auth/config).",
            )
        return None
    if not is_allowed_redirect(url, list(config["allowed_redirect_urls"])):
        raise ApiError(
            400,
            "INVALID_INPUT",
            f"{url} is not in the allowed redirect URLs",
            "Please add this URL to the allowed redirect URLs in the authentication configuration "
            "(allowedRedirectUrls, PUT /api/auth/config).",
        )
    return url


def with_query(url: str, params: dict[str, str]) -> str:
    parts = urlsplit(url)
    query = (parts.query + "&" if parts.query else "") + urlencode(params)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))


def user_id_of(value: str) -> str:
    if not UUID_PATTERN.match(value):
        raise ApiError(
            400,
            "INVALID_INPUT",
            "Invalid user ID format",
            "Send the user's id, a UUID such as those GET /api/auth/users lists.",
        )
    return value.lower()


async def claim_address(cur: AsyncCursor[DictRow], row: DictRow, *, keep_password: bool) -> list[str]:
    """The address of `row` has just been proven. If the account had not proven it before, end what its
    unverified owner set up (see the module docstring): its password (unless `keep_password`), its linked
    identities and its sessions. The session families ended (empty for an account verified already)."""
    if row["email_verified"]:
        return []
    user_id = str(row["id"])
    await cur.execute(
        "update auth.users set email_verified = true, "
        "password = case when %s then password end, updated_at = now() where id = %s",
        (keep_password, user_id),
    )
    await cur.execute("delete from auth.user_providers where user_id = %s", (user_id,))
    return await revoke_all_for_subject(cur, user_id)


def require_user(actor: Actor) -> Principal:
    """A signed-in user (an access token of role authenticated); 401 otherwise."""
    principal = actor.principal
    if (
        principal.kind is not CredentialKind.JWT
        or principal.db_role != "authenticated"
        or not principal.user_id
    ):
        raise ApiError(401, "AUTH_INVALID_CREDENTIALS", "User not authenticated", "Sign in as a user first.")
    return principal


def profile_too_large(size: int | None = None) -> ApiError:
    would_be = f" (it would be {size} bytes)" if size is not None else ""
    return ApiError(
        413,
        "PAYLOAD_TOO_LARGE",
        f"A profile may hold at most {PROFILE_MAX_BYTES // 1024} KB of JSON{would_be}.",
        "Send smaller values (a large field can be set to null); keep files in storage and put their "
        "URLs in the profile.",
    )


def user_not_found(next_actions: str, message: str = "User not found") -> ApiError:
    return ApiError(404, "AUTH_USER_NOT_FOUND", message, next_actions)


class Accounts:
    def __init__(self, parts: AuthParts) -> None:
        self.parts = parts

    async def issue(
        self, cur: AsyncCursor[DictRow], actor: Actor, row: DictRow, client_type: str
    ) -> IssuedTokens:
        """A new session for the user of `row`, inside the caller's transaction."""
        await relax_durability(cur)
        return await self.parts.sessions.issue(
            cur, user_subject(row), client_type=client_type, ip=actor.ip, user_agent=actor.user_agent
        )

    async def code_or_link_email(
        self,
        cur: AsyncCursor[DictRow],
        email: str,
        purpose: Purpose,
        *,
        link_path: str | None,
        redirect_to: str | None,
        template: str,
    ) -> PendingEmail | None:
        """A new one-time code for `email`, or a link to `link_path` with a token, as an email to send
        (`template` with `-code` or `-link` appended)."""
        codes, mailer = self.parts.codes, self.parts.mailer
        if link_path is not None:
            issued = await codes.new_link_token(cur, email, purpose, redirect_to)
            link = f"{self.parts.base_url}{link_path}?{urlencode({'token': issued.secret})}"
            values: dict[str, Any] = {"link": link, "expires_in_minutes": issued.minutes}
            return await mailer.prepare(cur, f"{template}-link", email, values)
        issued = await codes.new_code(cur, email, purpose)
        values = {"code": issued.secret, "expires_in_minutes": issued.minutes}
        return await mailer.prepare(cur, f"{template}-code", email, values)

    async def verification_email(
        self, cur: AsyncCursor[DictRow], config: DictRow, email: str, redirect_to: str | None
    ) -> PendingEmail | None:
        """A new verification code or link for `email` (by the project's method), as an email to send."""
        link = "/api/auth/email/verify-link" if config["verify_email_method"] == "link" else None
        return await self.code_or_link_email(
            cur, email, "VERIFY_EMAIL", link_path=link, redirect_to=redirect_to, template="email-verification"
        )

    # --- sign-up -------------------------------------------------------------------------------------------

    async def sign_up(self, actor: Actor, body: SignUp, client_type: str) -> SessionResult:
        """A public sign-up (InsForge's `POST /users` without admin rights): a session, or a pending
        verification when the project requires one."""
        await self.parts.limit(f"sign-up:{actor.ip}", self.parts.settings.sign_up_limit)
        return await self._register(actor, body, client_type, by_admin=False)

    async def create_user(self, actor: Actor, body: SignUp) -> SessionResult:
        """An admin adds a user (no session; `autoConfirm` honoured); audited."""
        if not actor.is_admin:
            raise ApiError(403, "FORBIDDEN", "Creating users needs admin rights.", ADMIN_ONLY)
        return await self._register(actor, body, "server", by_admin=True)

    async def _register(
        self, actor: Actor, body: SignUp, client_type: str, *, by_admin: bool
    ) -> SessionResult:
        config = await auth_config.read(self.parts.database)
        if config["disable_signup"] and not by_admin:
            raise signups_disabled()
        problems = auth_config.password_problems(config, body.password)
        if problems:
            raise weak_password(config, problems)
        auto_confirm = bool(body.autoConfirm) and by_admin
        needs_verification = config["require_email_verification"] and not auto_confirm
        redirect_to = check_redirect(
            body.redirectTo, config, required=needs_verification and config["verify_email_method"] == "link"
        )
        if needs_verification:
            async with self.parts.database.as_owner() as cur:
                if not smtp_settings.is_usable(await smtp_settings.load(cur)):
                    # The account could never be verified: say so before creating it.
                    raise smtp_settings.not_configured(f"the verification {config['verify_email_method']}")
        password_hash = await self.parts.passwords.hash(body.password)
        tokens = pending = None
        async with self.parts.database.as_owner() as cur:
            row = await users.create(
                cur,
                email=body.email,
                password_hash=password_hash,
                name=body.name,
                email_verified=auto_confirm,
            )
            if needs_verification:
                pending = await self.verification_email(cur, config, body.email, redirect_to)
            elif not by_admin:
                tokens = await self.issue(cur, actor, row, client_type)
            if by_admin:
                details = {"userId": str(row["id"]), "email": row["email"]}
                await audit.record(cur, actor, "CREATE_USER", MODULE, details)
        self.parts.mailer.send(pending)
        return SessionResult(users.user_json(row), tokens, require_verification=needs_verification)

    # --- sign-in -------------------------------------------------------------------------------------------

    async def sign_in_with_password(
        self, actor: Actor, body: PasswordSignIn, client_type: str
    ) -> SessionResult:
        settings = self.parts.settings
        # Per address alone (spraying many accounts), then per address and account (guessing one).
        await self.parts.limit(f"sign-in-ip:{actor.ip}", settings.sign_in_ip_limit)
        await self.parts.limit(f"sign-in:{actor.ip}:{body.email}", settings.sign_in_limit)
        async with self.parts.database.as_owner() as cur:
            row = await users.by_email(cur, body.email)
        check = await self.parts.passwords.check(row["password"] if row else None, body.password)
        if row is None or not check.ok:
            raise ApiError(401, "AUTH_UNAUTHORIZED", "Invalid credentials", "Check the email and password.")
        config = await auth_config.read(self.parts.database)
        if config["require_email_verification"] and not row["email_verified"]:
            raise ApiError(
                403,
                "FORBIDDEN",
                "Email verification required",
                "Please verify your email address before logging in "
                "(POST /api/auth/email/send-verification sends a new code or link).",
            )
        async with self.parts.database.as_owner() as cur:
            if check.new_hash:
                await users.set_password(cur, str(row["id"]), check.new_hash)
            tokens = await self.issue(cur, actor, row, client_type)
        return SessionResult(users.user_json(row), tokens)

    async def sign_in_with_code(self, actor: Actor, body: CodeSignIn, client_type: str) -> SessionResult:
        """Sign in with an emailed code, creating the account if there is none (unless sign-up is off). The
        code proves the address: an unverified account's password, identities and sessions end."""
        await self.parts.limit(
            f"verify:{actor.ip}",
            self.parts.settings.verify_limit,
            VERIFY_REFUSAL,
        )
        await self.parts.codes.redeem_code(self.parts.database, body.email, "SIGN_IN", body.otp)
        config = await auth_config.read(self.parts.database)
        ended: list[str] = []
        async with self.parts.database.as_owner() as cur:
            row = await users.by_email(cur, body.email, lock=True)
            if row is None:
                if config["disable_signup"]:
                    raise signups_disabled()
                row = await users.create(
                    cur, email=body.email, password_hash=None, name=body.name, email_verified=True
                )
            elif not row["email_verified"]:
                ended = await claim_address(cur, row, keep_password=False)
                row = await users.by_id(cur, str(row["id"]))
                assert row is not None
            tokens = await self.issue(cur, actor, row, client_type)
        self.parts.sessions.ended(ended)
        return SessionResult(users.user_json(row), tokens)

    # --- sessions ------------------------------------------------------------------------------------------

    async def refresh(self, actor: Actor, refresh_token: str, client_type: str) -> SessionResult:
        """Rotate a user's refresh token (one statement); a reused token revokes its family, then fails."""
        sessions = self.parts.sessions
        rotation = await sessions.rotate(
            refresh_token, "user", client_type=client_type, ip=actor.ip, user_agent=actor.user_agent
        )
        if rotation.user is None:
            raise ApiError(
                401,
                "AUTH_UNAUTHORIZED",
                "User not found",
                "The user of this session was deleted; sign up again.",
            )
        tokens = sessions.tokens_for(user_subject(rotation.user), rotation)
        return SessionResult(users.user_json(rotation.user), tokens)

    async def sign_out(
        self, actor: Actor, kind: SessionKind, refresh_token: str | None, *, everywhere: bool
    ) -> None:
        """End the session of the refresh token or, failing that, of the caller's access token; with
        `everywhere`, every session of that subject. A stale token ends nothing and is not an error, except
        that signing out everywhere needs a session to know whose."""
        principal = actor.principal
        family_id: str | None = None
        if principal.kind is CredentialKind.JWT:
            expected_role = "project_admin" if kind == "admin" else "authenticated"
            claimed = principal.claims.get("sid")
            if principal.db_role == expected_role and isinstance(claimed, str):
                family_id = claimed
        async with self.parts.database.as_owner() as cur:
            ended = await self.parts.sessions.end(
                cur, kind, refresh_token=refresh_token, family_id=family_id, everywhere=everywhere
            )
        if ended is None:
            if everywhere:
                raise ApiError(
                    401,
                    "AUTH_UNAUTHORIZED",
                    "Signing out everywhere needs a valid session.",
                    "Send the session's refresh token, or its access token as the bearer; or sign in again.",
                )
            return
        self.parts.sessions.ended(ended)

    async def current_user(self, actor: Actor) -> dict[str, Any]:
        """The user of the caller's access token (InsForge answers 401 for any other caller)."""
        user_id = require_user(actor).user_id
        assert user_id is not None
        async with self.parts.database.as_owner() as cur:
            row = await users.by_id(cur, user_id)
        if row is None:
            raise ApiError(
                401, "AUTH_INVALID_CREDENTIALS", "User not found", "The user was deleted; sign in again."
            )
        return {**users.user_json(row), "role": "authenticated"}

    # --- profiles ------------------------------------------------------------------------------------------

    async def update_profile(self, actor: Actor, change: ProfileUpdate) -> dict[str, Any]:
        """The caller's own profile; a token that is not a user's has none (InsForge: 404)."""
        principal = actor.principal
        row = None
        is_user = principal.kind is CredentialKind.JWT and principal.db_role == "authenticated"
        if is_user and principal.user_id:
            if len(orjson.dumps(change.profile)) > PROFILE_MAX_BYTES:  # (no need to ask the database)
                raise profile_too_large()
            try:
                async with self.parts.database.as_owner() as cur:
                    row = await users.merge_profile(cur, principal.user_id, change.profile, PROFILE_MAX_BYTES)
            except users.ProfileTooLarge as exc:
                raise profile_too_large(exc.size) from None
        if row is None:
            raise user_not_found("Sign in as a user: only a user's access token has a profile to update.")
        return {"id": str(row["id"]), "profile": users.user_json(row)["profile"]}

    async def profile(self, actor: Actor, user_id: str) -> dict[str, Any]:
        """Anyone's public profile (InsForge's contract: `{id, profile}`)."""
        async with self.parts.database.as_owner() as cur:
            row = await users.public_profile(cur, user_id_of(user_id))
        if row is None:
            raise user_not_found("Check the user id; the user may have been deleted.")
        return {"id": str(row["id"]), "profile": row["profile"]}
