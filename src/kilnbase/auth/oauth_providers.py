"""The OAuth providers InsForge supports, as data: endpoints, scopes, and how to read a profile.

One code path serves them all (`oauth_flow`): authorization code with PKCE towards the provider, then the
profile from the userinfo endpoint or, for Apple, from the validated ID token. Endpoints can be overridden
(`KILNBASE_AUTH_OAUTH_ENDPOINTS`), which points a built-in provider at a self-hosted or test server.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

#: InsForge's provider enum; the last three have no implementation there either.
KNOWN_PROVIDERS = (
    "google",
    "github",
    "discord",
    "linkedin",
    "facebook",
    "instagram",
    "tiktok",
    "apple",
    "x",
    "spotify",
    "microsoft",
)
UNSUPPORTED_PROVIDERS = frozenset({"instagram", "tiktok", "spotify"})


@dataclass(frozen=True)
class Identity:
    """Who the provider says signed in."""

    account_id: str
    email: str | None
    email_verified: bool
    name: str | None
    avatar_url: str | None
    raw: dict[str, Any]


@dataclass(frozen=True)
class Endpoints:
    authorize_url: str
    token_url: str
    userinfo_url: str | None = None
    #: For providers whose identity comes from an ID token (Apple), and for ID-token sign-in.
    jwks_uri: str | None = None
    issuer: str | None = None
    #: GitHub only: where the verified addresses are listed.
    emails_url: str | None = None


@dataclass(frozen=True)
class ProviderSpec:
    name: str
    endpoints: Endpoints
    scopes: tuple[str, ...]
    parse: Callable[[dict[str, Any]], Identity]
    client_auth_method: str = "client_secret_post"
    extra_authorize_params: tuple[tuple[str, str], ...] = ()


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _truthy(value: Any) -> bool:
    return value is True or value == "true"


def parse_oidc_claims(data: dict[str, Any]) -> Identity:
    """Standard OIDC claims (Google, Microsoft, LinkedIn, Apple, any custom OIDC provider)."""
    return Identity(
        account_id=str(data["sub"]),
        email=_text(data.get("email")),
        email_verified=_truthy(data.get("email_verified")),
        name=_text(data.get("name")),
        avatar_url=_text(data.get("picture")),
        raw=data,
    )


def parse_github(data: dict[str, Any]) -> Identity:
    """GitHub's `/user`, with `emails` (from `/user/emails`) merged in by the flow."""
    primary = next((e for e in data.get("emails", []) if e.get("primary") and e.get("verified")), None)
    return Identity(
        account_id=str(data["id"]),
        email=_text(primary["email"]) if primary else _text(data.get("email")),
        email_verified=primary is not None,
        name=_text(data.get("name")) or _text(data.get("login")),
        avatar_url=_text(data.get("avatar_url")),
        raw={k: v for k, v in data.items() if k != "emails"},
    )


def parse_discord(data: dict[str, Any]) -> Identity:
    avatar = None
    if data.get("avatar"):
        avatar = f"https://cdn.discordapp.com/avatars/{data['id']}/{data['avatar']}.png"
    return Identity(
        account_id=str(data["id"]),
        email=_text(data.get("email")),
        email_verified=_truthy(data.get("verified")),
        name=_text(data.get("global_name")) or _text(data.get("username")),
        avatar_url=avatar,
        raw=data,
    )


def parse_facebook(data: dict[str, Any]) -> Identity:
    picture = data.get("picture", {})
    url = picture.get("data", {}).get("url") if isinstance(picture, dict) else None
    # The Graph API only returns addresses Facebook has confirmed.
    return Identity(
        str(data["id"]), _text(data.get("email")), bool(data.get("email")), _text(data.get("name")), url, data
    )


def parse_x(data: dict[str, Any]) -> Identity:
    user = data.get("data", data)
    return Identity(
        account_id=str(user["id"]),
        email=_text(user.get("confirmed_email")),
        email_verified=bool(user.get("confirmed_email")),
        name=_text(user.get("name")) or _text(user.get("username")),
        avatar_url=_text(user.get("profile_image_url")),
        raw=user,
    )


def parse_microsoft(data: dict[str, Any]) -> Identity:
    # Microsoft accounts' addresses are not verified by Microsoft for every tenant: never link on them.
    identity = parse_oidc_claims(data)
    return replace(identity, email_verified=False)


BUILT_IN: dict[str, ProviderSpec] = {
    "google": ProviderSpec(
        "google",
        Endpoints(
            "https://accounts.google.com/o/oauth2/v2/auth",
            "https://oauth2.googleapis.com/token",
            "https://openidconnect.googleapis.com/v1/userinfo",
            jwks_uri="https://www.googleapis.com/oauth2/v3/certs",
            issuer="https://accounts.google.com",
        ),
        ("openid", "email", "profile"),
        parse_oidc_claims,
    ),
    "github": ProviderSpec(
        "github",
        Endpoints(
            "https://github.com/login/oauth/authorize",
            "https://github.com/login/oauth/access_token",
            "https://api.github.com/user",
            emails_url="https://api.github.com/user/emails",
        ),
        ("read:user", "user:email"),
        parse_github,
    ),
    "discord": ProviderSpec(
        "discord",
        Endpoints(
            "https://discord.com/oauth2/authorize",
            "https://discord.com/api/oauth2/token",
            "https://discord.com/api/users/@me",
        ),
        ("identify", "email"),
        parse_discord,
    ),
    "microsoft": ProviderSpec(
        "microsoft",
        Endpoints(
            "https://login.microsoftonline.com/common/oauth2/v2.0/authorize",
            "https://login.microsoftonline.com/common/oauth2/v2.0/token",
            "https://graph.microsoft.com/oidc/userinfo",
        ),
        ("openid", "email", "profile", "offline_access"),
        parse_microsoft,
    ),
    "linkedin": ProviderSpec(
        "linkedin",
        Endpoints(
            "https://www.linkedin.com/oauth/v2/authorization",
            "https://www.linkedin.com/oauth/v2/accessToken",
            "https://api.linkedin.com/v2/userinfo",
        ),
        ("openid", "profile", "email"),
        parse_oidc_claims,
    ),
    "facebook": ProviderSpec(
        "facebook",
        Endpoints(
            "https://www.facebook.com/v21.0/dialog/oauth",
            "https://graph.facebook.com/v21.0/oauth/access_token",
            "https://graph.facebook.com/me?fields=id,name,email,picture",
        ),
        ("email", "public_profile"),
        parse_facebook,
    ),
    "x": ProviderSpec(
        "x",
        Endpoints(
            "https://x.com/i/oauth2/authorize",
            "https://api.x.com/2/oauth2/token",
            "https://api.x.com/2/users/me?user.fields=profile_image_url,confirmed_email",
        ),
        ("users.read", "tweet.read", "users.email", "offline.access"),
        parse_x,
        client_auth_method="client_secret_basic",
    ),
    "apple": ProviderSpec(
        "apple",
        Endpoints(
            "https://appleid.apple.com/auth/authorize",
            "https://appleid.apple.com/auth/token",
            None,
            jwks_uri="https://appleid.apple.com/auth/keys",
            issuer="https://appleid.apple.com",
        ),
        ("name", "email"),
        parse_oidc_claims,
        extra_authorize_params=(("response_mode", "form_post"),),
    ),
}


def spec_for(provider: str, overrides: dict[str, dict[str, str]]) -> ProviderSpec:
    spec = BUILT_IN[provider]
    override = overrides.get(provider)
    if override:
        spec = replace(spec, endpoints=replace(spec.endpoints, **override))
    return spec
