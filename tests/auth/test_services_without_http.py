"""Auth's services called as the MCP server and the CLI will call them: built with `build_core` and
`build_services` over a test database, no HTTP anywhere. Every admin action lands in the audit log with who
did it, from where, through what, and how it ended; the public flows work the same without a request."""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest

from kilnbase.auth.accounts import PasswordSignIn, SignUp
from kilnbase.auth.admin import AdminSignIn
from kilnbase.auth.auth_config import AuthConfigUpdate
from kilnbase.auth.email_templates import TemplateUpdate
from kilnbase.auth.oauth_configs import (
    CustomConfigCreate,
    CustomConfigFields,
    OAuthConfigCreate,
    OAuthConfigFields,
)
from kilnbase.auth.smtp_settings import SmtpConfigUpdate
from kilnbase.config import Settings
from kilnbase.http.errors import ApiError
from kilnbase.identity.actor import SYSTEM_PRINCIPAL, Actor
from kilnbase.identity.principal import ANONYMOUS
from kilnbase.keys.project_keys import load_project_keys
from kilnbase.services import Services, build_core, build_services
from tests.auth.conftest import PASSWORD, auth_settings, new_email

pytestmark = pytest.mark.anyio

#: An admin acting through a tool, from a known address: every field must reach the audit entry.
ADMIN = Actor(SYSTEM_PRINCIPAL, ip="203.0.113.7", user_agent="services-test", tool="auth-test-tool")
STRANGER = Actor(ANONYMOUS, ip="198.51.100.9", user_agent="services-test")


@pytest.fixture(scope="module")
def service_settings(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return Settings(
        database_url=database_url, data_dir=tmp_path_factory.mktemp("services"), auth=auth_settings()
    )


@contextlib.asynccontextmanager
async def running(settings: Settings) -> AsyncIterator[Services]:
    assert settings.database_url is not None
    services = build_services(build_core(settings, load_project_keys(settings), settings.database_url))
    async with services.core.running(), services.auth.running():
        yield services


def audit_entries(database_url: str, action: str) -> list[dict[str, Any]]:
    with psycopg.connect(database_url) as conn:
        cur = conn.execute(
            "select actor, details, host(ip_address) as ip, user_agent, tool, outcome from system.audit_logs "
            "where action = %s and module = 'AUTH' order by created_at",
            (action,),
        )
        names = [c.name for c in cur.description or ()]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def recorded(database_url: str, action: str, outcome: str = "success") -> dict[str, Any]:
    """The latest entry for `action`, which must have been made by ADMIN with `outcome`."""
    entries = audit_entries(database_url, action)
    assert entries, f"no audit entry for {action}"
    entry = entries[-1]
    assert (entry["actor"], entry["ip"], entry["user_agent"], entry["tool"], entry["outcome"]) == (
        "system",
        "203.0.113.7",
        "services-test",
        "auth-test-tool",
        outcome,
    )
    details: dict[str, Any] = entry["details"]
    return details


async def test_config_changes_are_audited(service_settings: Settings, database_url: str) -> None:
    async with running(service_settings) as services:
        change = AuthConfigUpdate(passwordMinLength=8)
        assert (await services.auth.admin.update_config(ADMIN, change))["passwordMinLength"] == 8
    assert recorded(database_url, "UPDATE_AUTH_CONFIG") == {"updatedFields": ["passwordMinLength"]}


async def test_a_refused_change_is_audited_as_refused(service_settings: Settings, database_url: str) -> None:
    async with running(service_settings) as services:
        with pytest.raises(ApiError) as refused:
            await services.auth.admin.update_config(STRANGER, AuthConfigUpdate(disableSignup=True))
        assert (refused.value.status, refused.value.message) == (401, "No admin token provided")
        assert (await services.auth.admin.public_config())["disableSignup"] is False
    entry = audit_entries(database_url, "UPDATE_AUTH_CONFIG")[-1]
    assert (entry["actor"], entry["ip"], entry["outcome"]) == ("anon", "198.51.100.9", "refused")


async def test_creating_and_deleting_users_is_audited(service_settings: Settings, database_url: str) -> None:
    email = new_email()
    async with running(service_settings) as services:
        created = await services.auth.accounts.create_user(ADMIN, SignUp(email=email, password=PASSWORD))
        user_id = created.user["id"]
        assert created.tokens is None
        assert recorded(database_url, "CREATE_USER") == {"userId": user_id, "email": email}
        assert await services.auth.admin.delete_users(ADMIN, [user_id]) == 1
    assert recorded(database_url, "DELETE_USERS") == {"userIds": [user_id], "deletedCount": 1}


async def test_smtp_and_template_changes_are_audited(service_settings: Settings, database_url: str) -> None:
    smtp = SmtpConfigUpdate(
        enabled=True,
        host="127.0.0.1",
        port=2525,
        username="mailer",
        password="smtp-secret-password",
        senderEmail="noreply@kilnbase.test",
        senderName="Kilnbase",
    )
    template = TemplateUpdate(subject="Your code", bodyHtml="<p>{{ code }}</p>")
    async with running(service_settings) as services:
        assert (await services.auth.admin.update_smtp_config(ADMIN, smtp))["hasPassword"] is True
        await services.auth.admin.update_template(ADMIN, "request-otp", template)
        with pytest.raises(ApiError):
            await services.auth.admin.update_template(ADMIN, "no-such-template", template)
    details = recorded(database_url, "UPDATE_SMTP_CONFIG")
    assert details["passwordChanged"] is True and "smtp-secret-password" not in str(details)
    assert recorded(database_url, "UPDATE_EMAIL_TEMPLATE", "refused")["templateType"] == "no-such-template"
    assert audit_entries(database_url, "UPDATE_EMAIL_TEMPLATE")[0]["details"] == {
        "templateType": "request-otp"
    }


async def test_oauth_config_changes_are_audited(service_settings: Settings, database_url: str) -> None:
    key = f"sso{secrets.token_hex(3)}"
    async with running(service_settings) as services:
        admin = services.auth.admin
        await admin.create_oauth_config(
            ADMIN, OAuthConfigCreate(provider="github", clientId="id", clientSecret="secret")
        )
        await admin.update_oauth_config(ADMIN, "github", OAuthConfigFields(scopes=["read:user"]))
        await admin.delete_oauth_config(ADMIN, "github")
        with pytest.raises(ApiError):
            await admin.delete_oauth_config(ADMIN, "github")
        custom = CustomConfigCreate(
            key=key,
            name="SSO",
            discoveryEndpoint="https://sso.example.test/.well-known/openid-configuration",
            clientId="id",
            clientSecret="secret",
        )
        await admin.create_custom_oauth_config(ADMIN, custom)
        await admin.update_custom_oauth_config(ADMIN, key, CustomConfigFields(name="Company SSO"))
        await admin.delete_custom_oauth_config(ADMIN, key)
    assert audit_entries(database_url, "CREATE_OAUTH_CONFIG")[-1]["details"] == {"provider": "github"}
    assert recorded(database_url, "UPDATE_OAUTH_CONFIG") == {"provider": "github", "fields": ["scopes"]}
    assert recorded(database_url, "DELETE_OAUTH_CONFIG", "refused")["provider"] == "github"
    assert audit_entries(database_url, "DELETE_OAUTH_CONFIG")[-2]["outcome"] == "success"
    assert recorded(database_url, "CREATE_CUSTOM_OAUTH_CONFIG") == {"key": key}
    assert recorded(database_url, "UPDATE_CUSTOM_OAUTH_CONFIG") == {"key": key, "fields": ["name"]}
    assert recorded(database_url, "DELETE_CUSTOM_OAUTH_CONFIG") == {"key": key}


async def test_root_admin_sign_ins_are_audited_refusals_too(
    service_settings: Settings, database_url: str
) -> None:
    visitor = Actor(ANONYMOUS, ip="203.0.113.50", user_agent="dashboard")
    async with running(service_settings) as services:
        password = services.core.keys.root_admin_password
        with pytest.raises(ApiError):
            await services.auth.admin.sign_in(visitor, AdminSignIn(username="admin", password="wrong"), "web")
        signed_in = await services.auth.admin.sign_in(
            visitor, AdminSignIn(username="admin", password=password), "web"
        )
        assert signed_in.tokens is not None
    refused, success = audit_entries(database_url, "ADMIN_SIGN_IN")[-2:]
    assert (refused["actor"], refused["ip"], refused["outcome"]) == ("anon", "203.0.113.50", "refused")
    assert (success["actor"], success["ip"], success["outcome"]) == ("admin", "203.0.113.50", "success")


async def test_public_flows_work_without_a_request(service_settings: Settings) -> None:
    email = new_email()
    caller = Actor(ANONYMOUS, ip="192.0.2.1", user_agent="cli")
    async with running(service_settings) as services:
        accounts = services.auth.accounts
        signed_up = await accounts.sign_up(caller, SignUp(email=email, password=PASSWORD), "server")
        assert signed_up.tokens is not None
        signed_in = await accounts.sign_in_with_password(
            caller, PasswordSignIn(email=email, password=PASSWORD), "server"
        )
        assert signed_in.tokens is not None
        rotated = await accounts.refresh(caller, signed_in.tokens.refresh_token, "server")
        assert rotated.tokens is not None and rotated.user["email"] == email
        await accounts.sign_out(caller, "user", rotated.tokens.refresh_token, everywhere=True)
        with pytest.raises(ApiError) as ended:
            await accounts.refresh(caller, rotated.tokens.refresh_token, "server")
        assert ended.value.status == 401
        # The signed-out sessions' access tokens are refused by this process at once.
        assert services.core.ended_sessions.has_ended(signed_in.tokens.session_id)
        assert services.core.ended_sessions.has_ended(signed_up.tokens.session_id)


async def test_the_sweep_deletes_only_sessions_expired_over_an_hour_ago(service_settings: Settings) -> None:
    async with running(service_settings) as services:
        email = new_email()
        await services.auth.accounts.sign_up(STRANGER, SignUp(email=email, password=PASSWORD), "mobile")
        with psycopg.connect(service_settings.database_url or "", autocommit=True) as conn:
            user_id = conn.execute("select id from auth.users where email = %s", (email,)).fetchone()
            assert user_id is not None
            ages = {"long expired": "-2 hours", "just expired": "-5 minutes", "live": "+1 day"}
            families = {}
            for label, age in ages.items():
                row = conn.execute(
                    "insert into auth.sessions (family_id, kind, user_id, subject, generation, expires_at, "
                    "revoked_at) values (gen_random_uuid(), 'user', %s, %s, 0, now() + %s::interval, "
                    "case when %s = 'long expired' then now() - interval '3 hours' end) returning family_id",
                    (user_id[0], str(user_id[0]), age, label),
                ).fetchone()
                assert row is not None
                families[label] = row[0]
            assert await services.auth.parts.sessions.prune_expired(batch=1) >= 1
            wanted = list(families.values())
            found = conn.execute("select family_id from auth.sessions where family_id = any(%s)", (wanted,))
            left = {row[0] for row in found}
    assert left == {families["just expired"], families["live"]}
