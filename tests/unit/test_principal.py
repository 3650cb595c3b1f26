"""Every credential InsForge accepts maps to the right role; anything wrong fails closed."""

from __future__ import annotations

import pytest

from kilnbase.config import Settings
from kilnbase.identity.agent_keys import AgentKeys
from kilnbase.identity.ended_sessions import EndedSessions
from kilnbase.identity.external_tokens import ExternalTokens
from kilnbase.identity.principal import (
    ANONYMOUS,
    CredentialError,
    CredentialKind,
    CredentialResolver,
    Principal,
)
from kilnbase.keys.access_tokens import TokenService
from kilnbase.keys.project_keys import ProjectKeys, load_project_keys


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> ProjectKeys:
    return load_project_keys(Settings(data_dir=tmp_path_factory.mktemp("keys")))


@pytest.fixture(scope="module")
def tokens(keys: ProjectKeys) -> TokenService:
    return TokenService(keys)


@pytest.fixture(scope="module")
def ended() -> EndedSessions:
    """Never started: filled by hand (the database side is tested over HTTP)."""
    return EndedSessions("postgresql://unused", access_token_seconds=900)


@pytest.fixture(scope="module")
def resolver(keys: ProjectKeys, tokens: TokenService, ended: EndedSessions) -> CredentialResolver:
    unused = "postgresql://unused"
    return CredentialResolver(keys, tokens, ended, AgentKeys(unused), ExternalTokens(unused))


def test_no_credential_is_anonymous(resolver: CredentialResolver) -> None:
    assert resolver.resolve(None, None) is ANONYMOUS
    assert ANONYMOUS.db_role == "anon" and ANONYMOUS.kind is CredentialKind.NONE


def test_api_key_as_bearer_or_header_is_admin(resolver: CredentialResolver, keys: ProjectKeys) -> None:
    for principal in (resolver.resolve(f"Bearer {keys.api_key}", None), resolver.resolve(None, keys.api_key)):
        assert principal.db_role == "project_admin" and principal.is_admin
        assert principal.kind is CredentialKind.API_KEY and principal.actor == "api-key"


def test_anon_key_is_anon(resolver: CredentialResolver, keys: ProjectKeys) -> None:
    principal = resolver.resolve(f"Bearer {keys.anon_key}", None)
    assert principal.db_role == "anon" and principal.kind is CredentialKind.ANON_KEY
    assert principal.user_id is None and "sub" not in principal.claims


def test_user_jwt_is_authenticated(resolver: CredentialResolver, tokens: TokenService) -> None:
    token = tokens.sign({"sub": "7d8e", "role": "authenticated", "email": "u@example.com"})
    principal = resolver.resolve(f"bearer {token}", None)
    assert principal.db_role == "authenticated" and principal.kind is CredentialKind.JWT
    assert (principal.user_id, principal.email) == ("7d8e", "u@example.com")
    assert principal.claims["sub"] == "7d8e" and not principal.is_admin


def test_admin_jwt_is_project_admin(resolver: CredentialResolver, tokens: TokenService) -> None:
    principal = resolver.resolve("Bearer " + tokens.sign({"sub": "root", "role": "project_admin"}), None)
    assert principal.is_admin and principal.kind is CredentialKind.JWT


@pytest.mark.parametrize("role", ["postgres", "service_role", "", None, "pg_read_all_data"])
def test_a_token_cannot_choose_another_database_role(
    resolver: CredentialResolver, tokens: TokenService, role: str | None
) -> None:
    claims = {"sub": "x"} if role is None else {"sub": "x", "role": role}
    with pytest.raises(CredentialError, match="role"):
        resolver.resolve("Bearer " + tokens.sign(claims), None)


@pytest.mark.parametrize(
    "authorization",
    [
        "Bearer ik_" + "0" * 64,
        "Bearer anon_" + "0" * 64,
        "Bearer not-a-jwt",
        "Basic dXNlcjpwYXNz",
        "Bearer ",
        "Bearer",
    ],
)
def test_invalid_credentials_fail_closed(resolver: CredentialResolver, authorization: str) -> None:
    with pytest.raises(CredentialError):
        resolver.resolve(authorization, None)


def test_wrong_api_key_header_fails_closed(resolver: CredentialResolver) -> None:
    with pytest.raises(CredentialError):
        resolver.resolve(None, "ik_" + "1" * 64)


def test_expired_user_token_fails_closed(resolver: CredentialResolver, tokens: TokenService) -> None:
    with pytest.raises(CredentialError, match="expired"):
        resolver.resolve("Bearer " + tokens.sign({"sub": "u", "role": "authenticated"}, expires_in=-5), None)


def test_a_token_of_an_ended_session_fails_closed(
    resolver: CredentialResolver, tokens: TokenService, ended: EndedSessions
) -> None:
    live = tokens.sign({"sub": "u", "role": "authenticated", "sid": "family-live"})
    gone = tokens.sign({"sub": "u", "role": "authenticated", "sid": "family-gone"})
    assert resolver.resolve("Bearer " + gone, None).user_id == "u"  # verified, and cached
    ended.add(["family-gone"])
    with pytest.raises(CredentialError, match="signed out"):
        resolver.resolve("Bearer " + gone, None)
    assert resolver.resolve("Bearer " + live, None).user_id == "u"


@pytest.mark.parametrize(
    ("scopes", "reads", "writes", "invokes"),
    [
        ({"functions:read"}, True, False, False),
        ({"*:read"}, True, False, False),
        ({"functions:write"}, True, True, True),
        ({"*:write"}, True, True, True),
        ({"functions:invoke"}, False, False, True),
        ({"database:write"}, False, False, False),
    ],
)
def test_scopes_in_the_functions_group(scopes: set[str], reads: bool, writes: bool, invokes: bool) -> None:
    """`functions:invoke` is its own right: write scopes include it, read scopes do not, and it reaches
    neither reads nor writes. The read and write scopes mean what they meant before it existed."""
    principal = Principal("project_admin", CredentialKind.AGENT_KEY, scopes=frozenset(scopes))
    assert principal.allows("functions", "read") is reads
    assert principal.allows("functions", "write") is writes
    assert principal.allows("functions", "invoke") is invokes


def test_an_external_caller_never_shares_the_api_keys_ai_cache_or_ledger_name() -> None:
    """The AI gateway keys its response cache and ledger by the caller's name: an external provider's token
    whose email claims to be `api-key` (or another provider's user's address) gets a name of its own."""
    from kilnbase.ai.caller import caller_of_principal
    from kilnbase.identity.principal import API_KEY_HOLDER

    def external(provider: str, sub: str) -> Principal:
        claims = {"sub": sub, "email": "api-key", "role": "project_admin", "provider": provider}
        return Principal("project_admin", CredentialKind.EXTERNAL_JWT, sub, "api-key", claims)

    api_key = caller_of_principal(API_KEY_HOLDER, None)
    first = caller_of_principal(external("clerk", "user_1"), None)
    other = caller_of_principal(external("auth0", "user_2"), None)
    assert len({api_key.cache_owner, first.cache_owner, other.cache_owner}) == 3
    assert first.principal == "jwt:clerk:user_1"
