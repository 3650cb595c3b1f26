"""`@insforge/sdk`'s auth methods, unchanged, against a running Kilnbase server, with a real SMTP server and
a real OpenID provider on loopback."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from kilnbase.config import Settings
from kilnbase.keys.access_tokens import TokenService
from kilnbase.keys.project_keys import load_project_keys
from tests.support.node import run_node
from tests.support.oidc_provider import OidcProvider, ProviderUser
from tests.support.servers import ServerProcess
from tests.support.smtp_server import SmtpServer

if TYPE_CHECKING:
    from tests.support.postgres import TestCluster

pytestmark = pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")

APP = "http://localhost:3000"
PASSWORD = "correct horse 1"


@pytest.fixture(scope="module")
def oidc() -> Iterator[OidcProvider]:
    provider = OidcProvider()
    provider.start()
    yield provider
    provider.stop()


@pytest.fixture(scope="module")
def smtp() -> Iterator[SmtpServer]:
    server = SmtpServer(username="mailer", password="smtp-secret-password")
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def server(
    cluster: TestCluster, tmp_path_factory: pytest.TempPathFactory, oidc: OidcProvider, smtp: SmtpServer
) -> Iterator[dict[str, str]]:
    env = {
        "DATABASE_URL": cluster.create_database("authsdk"),
        "KILNBASE_AUTH_ARGON2_TIME_COST": "2",
        "KILNBASE_AUTH_ARGON2_MEMORY_COST_KIB": "19456",
        "KILNBASE_AUTH_ARGON2_PARALLELISM": "1",
        "KILNBASE_AUTH_OAUTH_ENDPOINTS": json.dumps({"google": oidc.endpoints_for("google")}),
    }
    process = ServerProcess(tmp_path_factory.mktemp("authsdk") / "data", env=env)
    process.start()
    stored = json.loads((process.data_dir / "keys.json").read_text())
    keys = {
        "url": process.url,
        "apiKey": stored["api_key"],
        "anonKey": stored["anon_key"],
        "dataDir": str(process.data_dir),
    }
    admin = {"Authorization": f"Bearer {keys['apiKey']}"}
    smtp_config = {
        "enabled": True,
        "host": "127.0.0.1",
        "port": smtp.port,
        "username": smtp.username,
        "password": smtp.password,
        "senderEmail": "noreply@kilnbase.test",
        "senderName": "Kilnbase",
        "minIntervalSeconds": 0,
    }
    google = {"provider": "google", "clientId": oidc.client_id, "clientSecret": oidc.client_secret}
    with httpx.Client(base_url=process.url, headers=admin) as http:
        assert http.put("/api/auth/smtp-config", json=smtp_config).status_code == 200
        assert http.post("/api/auth/oauth/configs", json=google).status_code == 200
        assert http.put("/api/auth/config", json={"allowedRedirectUrls": [APP]}).status_code == 200
    yield keys
    process.stop()


def sdk(server: dict[str, str], body: str, **values: Any) -> Any:
    """Run `body` (ES module code using `client`, `serverClient` and `input`) and return what it prints."""
    script = f"""
import {{ createClient }} from '@insforge/sdk';
const input = JSON.parse(process.env.SDK_INPUT);
const client = createClient({{ baseUrl: process.env.BASE_URL, anonKey: process.env.ANON_KEY }});
const serverClient = createClient({{
  baseUrl: process.env.BASE_URL, anonKey: process.env.ANON_KEY, isServerMode: true }});
const out = {{}};
{body}
console.log(JSON.stringify(out));
"""
    env = {"BASE_URL": server["url"], "ANON_KEY": server["anonKey"], "SDK_INPUT": json.dumps(values)}
    return run_node(script, env)


def admin(server: dict[str, str]) -> httpx.Client:
    return httpx.Client(base_url=server["url"], headers={"Authorization": f"Bearer {server['apiKey']}"})


def test_sign_up_sign_in_profile_refresh_sign_out(server: dict[str, str]) -> None:
    email = f"sdk-{secrets.token_hex(4)}@example.com"
    out = sdk(
        server,
        """
const up = await serverClient.auth.signUp({ email: input.email, password: input.password, name: 'Sdk User' });
out.signUp = {
  error: up.error?.message ?? null, email: up.data?.user?.email, hasRefresh: !!up.data?.refreshToken };
const dup = await client.auth.signUp({ email: input.email, password: input.password });
out.duplicate = { status: dup.error?.statusCode, code: dup.error?.error };
const bad = await client.auth.signInWithPassword({ email: input.email, password: 'wrong password' });
out.badPassword = bad.error?.statusCode;
const signIn = await serverClient.auth.signInWithPassword({ email: input.email, password: input.password });
out.signIn = { error: signIn.error?.message ?? null, userId: signIn.data?.user?.id };
const me = createClient({
  baseUrl: process.env.BASE_URL, anonKey: process.env.ANON_KEY, accessToken: signIn.data.accessToken });
const current = await me.auth.getCurrentUser();
out.current = current.data?.user?.email ?? current.error?.message;
const browser = await client.auth.signInWithPassword({ email: input.email, password: input.password });
out.browserUser = (await client.auth.getCurrentUser()).data?.user?.email;
out.csrf = typeof browser.data?.csrfToken;
const profile = await client.auth.setProfile({ bio: 'writes compilers' });
out.profile = profile.data?.profile ?? profile.error?.message;
const publicProfile = await client.auth.getProfile(signIn.data.user.id);
out.publicProfile = publicProfile.data?.profile;
const refreshed = await serverClient.auth.refreshSession({ refreshToken: signIn.data.refreshToken });
out.refreshed = {
  error: refreshed.error?.message ?? null,
  rotated: refreshed.data?.refreshToken !== signIn.data.refreshToken };
const reused = await serverClient.auth.refreshSession({ refreshToken: signIn.data.refreshToken });
out.reused = reused.error?.statusCode;
const again = await serverClient.auth.signInWithPassword({ email: input.email, password: input.password });
const signedOut = await serverClient.auth.signOut();
out.signOut = signedOut.error;
const config = await client.auth.getPublicAuthConfig();
out.publicConfig = config.data?.oAuthProviders;
""",
        email=email,
        password=PASSWORD,
    )
    assert out["signUp"] == {"error": None, "email": email, "hasRefresh": True}
    assert out["duplicate"] == {"status": 409, "code": "AUTH_EMAIL_EXISTS"}
    assert out["badPassword"] == 401
    assert out["signIn"]["error"] is None
    assert out["current"] == email
    assert out["browserUser"] == email
    assert out["csrf"] == "string"
    assert out["profile"] == {"name": "Sdk User", "bio": "writes compilers"}
    assert out["publicProfile"]["bio"] == "writes compilers"
    assert out["refreshed"] == {"error": None, "rotated": True}
    assert out["reused"] == 401
    assert out["signOut"] is None
    assert out["publicConfig"] == ["google"]


# A browser for the SDK in Node: `document.cookie` for its CSRF token, a jar for the httpOnly refresh cookie.
BROWSER = """
globalThis.document = { cookie: '' };
const jar = new Map();
const browserFetch = async (url, init = {}) => {
  const headers = new Headers(init.headers);
  if (jar.size) headers.set('cookie', [...jar].map(([name, value]) => `${name}=${value}`).join('; '));
  const response = await fetch(url, { ...init, headers });
  for (const cookie of response.headers.getSetCookie()) {
    const [pair] = cookie.split(';');
    jar.set(pair.slice(0, pair.indexOf('=')), pair.slice(pair.indexOf('=') + 1));
  }
  return response;
};
const browser = createClient({
  baseUrl: process.env.BASE_URL, anonKey: process.env.ANON_KEY, fetch: browserFetch });
"""


def test_an_expired_access_token_is_refreshed_and_the_call_retried(server: dict[str, str]) -> None:
    """A browser session outlives its 15-minute access token: on a 401 AUTH_UNAUTHORIZED the SDK refreshes
    with the cookie and retries. Any other code for an expired token leaves the user signed out."""
    email = f"sdk-{secrets.token_hex(4)}@example.com"
    tokens = TokenService(load_project_keys(Settings(data_dir=Path(server["dataDir"]))))
    out = sdk(
        server,
        BROWSER
        + """
const up = await browser.auth.signUp({ email: input.email, password: input.password });
const expired = input.expired.replace('USER_ID', up.data.user.id);
for (const [name, call] of [
  ['setProfile', () => browser.auth.setProfile({ bio: 'still signed in' })],
  ['storage', () => browser.storage.from('no-such-bucket').list()],
]) {
  browser.getHttpClient().setAuthToken(expired);
  const result = await call();
  out[name] = result.error ? { status: result.error.statusCode, code: result.error.error } : 'ok';
}
out.profile = (await browser.auth.getProfile(up.data.user.id)).data?.profile;
""",
        email=email,
        password=PASSWORD,
        expired=tokens.sign({"sub": "USER_ID", "role": "authenticated", "email": email}, expires_in=-60),
    )
    assert out["setProfile"] == "ok"
    assert out["storage"] == {"status": 404, "code": "STORAGE_NOT_FOUND"}  # refreshed, then the real answer
    assert out["profile"] == {"bio": "still signed in"}


def test_emails_send_goes_through_the_projects_smtp_server(server: dict[str, str], smtp: SmtpServer) -> None:
    """`emails.send` (`POST /api/email/send-raw`): a signed-in user's email, with cc, bcc, reply-to and a
    display name, reaches every recipient; the anon key and a body without its fields are refused."""
    tag = secrets.token_hex(4)
    out = sdk(
        server,
        """
const email = `sender-${input.tag}@example.com`;
const up = await serverClient.auth.signUp({ email, password: input.password });
const user = createClient({
  baseUrl: process.env.BASE_URL, anonKey: process.env.ANON_KEY, accessToken: up.data.accessToken });
const e = (r) =>
  (r.error ? { status: r.error.statusCode, code: r.error.error, message: r.error.message } : null);
const sent = await user.emails.send({
  to: [`one-${input.tag}@example.com`, `two-${input.tag}@example.com`],
  cc: `cc-${input.tag}@example.com`,
  bcc: [`bcc-${input.tag}@example.com`],
  subject: 'Your receipt',
  html: '<p>Thanks for your order</p>',
  from: 'Acme Shop',
  replyTo: 'support@example.com',
});
out.sent = { data: sent.data, error: e(sent) };
const anon = await client.emails.send({ to: 'x@example.com', subject: 'hi', html: '<p>hi</p>' });
out.anon = e(anon);
const missing = await user.emails.send({ to: 'not-an-address', subject: 'hi' });
out.missing = e(missing);
""",
        tag=tag,
        password=PASSWORD,
    )
    assert out["sent"] == {"data": {}, "error": None}
    assert out["anon"] == {
        "status": 401,
        "code": "AUTH_INVALID_CREDENTIALS",
        "message": "Sending emails requires an authenticated user",
    }
    assert out["missing"]["status"] == 400 and out["missing"]["code"] == "INVALID_INPUT"
    assert "to:" in out["missing"]["message"] and "html:" in out["missing"]["message"]
    received = smtp.last_for(f"one-{tag}@example.com")
    assert set(received.to) == {f"{who}-{tag}@example.com" for who in ("one", "two", "cc", "bcc")}
    assert received.message["Subject"] == "Your receipt"
    assert received.message["Reply-To"] == "support@example.com"
    assert received.message["From"] == "Acme Shop <noreply@kilnbase.test>"
    assert received.message["Cc"] == f"cc-{tag}@example.com"
    assert received.message["Bcc"] is None
    assert "Thanks for your order" in received.html


def test_verify_email_and_reset_password(server: dict[str, str], smtp: SmtpServer) -> None:
    email = f"sdk-{secrets.token_hex(4)}@example.com"
    with admin(server) as http:
        assert http.put("/api/auth/config", json={"requireEmailVerification": True}).status_code == 200
    try:
        out = sdk(
            server,
            """
const up = await client.auth.signUp({ email: input.email, password: input.password });
out.requireVerification = up.data?.requireEmailVerification;
out.accessToken = up.data?.accessToken;
const blocked = await client.auth.signInWithPassword({ email: input.email, password: input.password });
out.blocked = blocked.error?.error;
""",
            email=email,
            password=PASSWORD,
        )
        assert out == {"requireVerification": True, "accessToken": None, "blocked": "FORBIDDEN"}
        code = smtp.last_for(email).code
        out = sdk(
            server,
            """
const verified = await serverClient.auth.verifyEmail({ email: input.email, otp: input.code });
out.verified = verified.data?.user?.emailVerified ?? verified.error?.message;
const sent = await client.auth.sendResetPasswordEmail({ email: input.email });
out.sent = sent.error?.message ?? sent.data?.success;
""",
            email=email,
            code=code,
        )
        assert out == {"verified": True, "sent": True}
        reset_code = smtp.last_for(email, count=2).code
        out = sdk(
            server,
            """
const exchanged = await client.auth.exchangeResetPasswordToken({ email: input.email, code: input.code });
out.token = typeof exchanged.data?.token;
const reset = await client.auth.resetPassword({ newPassword: 'brand new pass 7', otp: exchanged.data.token });
out.reset = reset.error?.message ?? 'ok';
const oldPassword = await client.auth.signInWithPassword({ email: input.email, password: input.password });
out.oldPassword = oldPassword.error?.statusCode;
const newPassword = await client.auth.signInWithPassword({
  email: input.email, password: 'brand new pass 7' });
out.newPassword = newPassword.data?.user?.email;
""",
            email=email,
            code=reset_code,
            password=PASSWORD,
        )
        assert out == {"token": "string", "reset": "ok", "oldPassword": 401, "newPassword": email}
    finally:
        with admin(server) as http:
            http.put("/api/auth/config", json={"requireEmailVerification": False})


def oauth_round_trip(server: dict[str, str]) -> tuple[str, str]:
    """signInWithOAuth in the SDK, the browser's trip through the provider: (insforge_code, codeVerifier)."""
    started = sdk(
        server,
        """
const { data, error } = await serverClient.auth.signInWithOAuth({
  provider: 'google', redirectTo: input.redirect, skipBrowserRedirect: true });
out.url = data?.url; out.verifier = data?.codeVerifier; out.error = error?.message ?? null;
""",
        redirect=f"{APP}/callback",
    )
    assert started["error"] is None
    at_provider = httpx.get(started["url"], follow_redirects=False)
    back = httpx.get(at_provider.headers["location"], follow_redirects=False)
    assert back.status_code == 302
    target = urlsplit(back.headers["location"])
    assert f"{target.scheme}://{target.netloc}{target.path}" == f"{APP}/callback"
    return parse_qs(target.query)["insforge_code"][0], started["verifier"]


def test_oauth_sign_in_and_code_exchange(server: dict[str, str], oidc: OidcProvider) -> None:
    email = f"sdk-{secrets.token_hex(4)}@example.com"
    oidc.next_user = ProviderUser(f"sdk-{email}", email, True, "Oauth Person")
    code, verifier = oauth_round_trip(server)
    out = sdk(
        server,
        """
const session = await serverClient.auth.exchangeOAuthCode(input.code, input.verifier);
out.email = session.data?.user?.email ?? session.error?.message;
out.providers = session.data?.user?.providers;
out.hasRefresh = !!session.data?.refreshToken;
const replay = await serverClient.auth.exchangeOAuthCode(input.code, input.verifier);
out.replay = replay.error?.statusCode;
""",
        code=code,
        verifier=verifier,
    )
    assert out == {"email": email, "providers": ["google"], "hasRefresh": True, "replay": 400}
    code, _verifier = oauth_round_trip(server)
    out = sdk(
        server,
        """
const wrong = await serverClient.auth.exchangeOAuthCode(input.code, 'x'.repeat(43));
out.wrong = wrong.error?.statusCode;
""",
        code=code,
    )
    assert out == {"wrong": 400}
