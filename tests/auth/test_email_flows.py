"""Email flows through a real SMTP server on loopback: verification (code and link), sign-in codes, password
reset (code, exchange, link), attempt limits, expiry, templates, SMTP settings, rate limits and cooldowns."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import psycopg
import pytest
from starlette.testclient import TestClient

from kilnbase.app import create_app
from kilnbase.config import Settings
from tests.auth.conftest import PASSWORD, auth_settings, eventually, new_email, sign_up, smtp_body
from tests.support.servers import free_port
from tests.support.smtp_server import SmtpServer

REDIRECT = "http://localhost:3000/auth/done"

# The loopback test server takes a login without TLS on purpose; aiosmtpd warns about it per connection.
pytestmark = pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")


@pytest.fixture
def config(client: TestClient, admin_headers: dict[str, str]) -> Iterator[Any]:
    """Change the auth config for one test; restore the defaults afterwards."""

    def change(**fields: Any) -> None:
        assert client.put("/api/auth/config", json=fields, headers=admin_headers).status_code == 200

    yield change
    defaults = {
        "requireEmailVerification": False,
        "verifyEmailMethod": "code",
        "resetPasswordMethod": "code",
        "allowedRedirectUrls": [],
    }
    client.put("/api/auth/config", json=defaults, headers=admin_headers)


def test_smtp_password_is_write_only_and_encrypted(
    client: TestClient, admin_headers: dict[str, str], smtp: SmtpServer, database_url: str
) -> None:
    shown = client.get("/api/auth/smtp-config", headers=admin_headers).json()
    assert shown["hasPassword"] is True
    assert "password" not in shown
    assert smtp.password not in str(shown)
    with psycopg.connect(database_url) as conn:
        row = conn.execute("select password_ciphertext from auth.smtp_config").fetchone()
        actions = [r[0] for r in conn.execute("select action from system.audit_logs").fetchall()]
    assert row is not None
    assert row[0].startswith("v1:")
    assert smtp.password not in row[0]
    assert "UPDATE_SMTP_CONFIG" in actions
    # Saving without a password keeps the stored one.
    without = {k: v for k, v in smtp_body(smtp).items() if k != "password"}
    assert (
        client.put("/api/auth/smtp-config", json=without, headers=admin_headers).json()["hasPassword"] is True
    )


@pytest.mark.parametrize(
    "change",
    [{"port": 0}, {"port": "587"}, {"senderEmail": "nope"}, {"host": ""}, {"minIntervalSeconds": -1}],
)
def test_bad_smtp_config_is_refused(
    client: TestClient, admin_headers: dict[str, str], smtp: SmtpServer, change: dict[str, Any]
) -> None:
    before = client.get("/api/auth/smtp-config", headers=admin_headers).json()
    response = client.put("/api/auth/smtp-config", json=smtp_body(smtp, **change), headers=admin_headers)
    assert response.status_code == 400
    assert client.get("/api/auth/smtp-config", headers=admin_headers).json() == before


def test_smtp_config_is_refused_in_insforges_words_and_turning_it_off_needs_nothing_else(
    client: TestClient, admin_headers: dict[str, str], smtp: SmtpServer
) -> None:
    empty = {"enabled": True, "port": 587, "host": " ", "senderEmail": "nope"}
    refused = client.put("/api/auth/smtp-config", json=empty, headers=admin_headers)
    assert (refused.status_code, refused.json()["message"]) == (
        400,
        "host: SMTP host is required, username: SMTP username is required, "
        "senderEmail: Invalid sender email, senderName: Sender name is required",
    )
    try:
        off = client.put("/api/auth/smtp-config", json={"enabled": False, "port": 587}, headers=admin_headers)
        assert (off.status_code, off.json()["enabled"]) == (200, False)
    finally:
        client.put("/api/auth/smtp-config", json=smtp_body(smtp), headers=admin_headers)


def test_smtp_config_needs_admin(client: TestClient, smtp: SmtpServer) -> None:
    assert client.get("/api/auth/smtp-config").status_code == 401
    assert client.put("/api/auth/smtp-config", json=smtp_body(smtp)).status_code == 401


def test_verification_code_arrives_signs_in_and_works_once(
    client: TestClient, smtp: SmtpServer, config: Any
) -> None:
    config(requireEmailVerification=True, verifyEmailMethod="code")
    email = new_email()
    created = client.post("/api/auth/users", json={"email": email, "password": PASSWORD})
    assert created.json()["requireEmailVerification"] is True
    mail = smtp.last_for(email)
    assert mail.message["Subject"] == "Verify your email"
    assert (smtp.username, smtp.password) in smtp.logins
    verified = client.post(
        "/api/auth/email/verify?client_type=mobile", json={"email": email, "otp": mail.code}
    )
    assert verified.status_code == 200, verified.text
    assert verified.json()["user"]["emailVerified"] is True
    assert verified.json()["refreshToken"]
    again = client.post("/api/auth/email/verify", json={"email": email, "otp": mail.code})
    assert again.status_code == 400
    assert client.post("/api/auth/sessions", json={"email": email, "password": PASSWORD}).status_code == 200


def test_a_code_is_burnt_after_too_many_wrong_attempts(
    client: TestClient, smtp: SmtpServer, config: Any
) -> None:
    config(requireEmailVerification=True)
    email = new_email()
    client.post("/api/auth/users", json={"email": email, "password": PASSWORD})
    code = smtp.last_for(email).code
    wrong = f"{(int(code) + 1) % 1_000_000:06d}"
    answers = [client.post("/api/auth/email/verify", json={"email": email, "otp": wrong}) for _ in range(5)]
    assert all(a.status_code == 400 for a in answers)
    assert "Too many" in answers[-1].json()["nextActions"]
    assert client.post("/api/auth/email/verify", json={"email": email, "otp": code}).status_code == 400


def test_an_expired_code_is_refused(
    client: TestClient, smtp: SmtpServer, config: Any, database_url: str
) -> None:
    config(requireEmailVerification=True)
    email = new_email()
    client.post("/api/auth/users", json={"email": email, "password": PASSWORD})
    code = smtp.last_for(email).code
    with psycopg.connect(database_url) as conn:
        conn.execute(
            "update auth.email_otps set expires_at = now() - interval '1 second' where email = %s", (email,)
        )
    assert client.post("/api/auth/email/verify", json={"email": email, "otp": code}).status_code == 400


def test_malformed_verification_input_is_refused(client: TestClient) -> None:
    assert (
        client.post("/api/auth/email/verify", json={"email": new_email(), "otp": "12ab56"}).status_code == 400
    )
    assert client.post("/api/auth/email/verify", json={"otp": "123456"}).status_code == 400


def test_verification_link_redirects_once_to_an_allowed_url(
    client: TestClient, smtp: SmtpServer, config: Any
) -> None:
    config(
        requireEmailVerification=True, verifyEmailMethod="link", allowedRedirectUrls=["http://localhost:3000"]
    )
    email = new_email()
    refused = client.post(
        "/api/auth/users", json={"email": email, "password": PASSWORD, "redirectTo": "https://evil.example/x"}
    )
    assert refused.status_code == 400
    assert client.post("/api/auth/users", json={"email": email, "password": PASSWORD}).status_code == 400
    created = client.post(
        "/api/auth/users", json={"email": email, "password": PASSWORD, "redirectTo": REDIRECT}
    )
    assert created.status_code == 200
    link = urlsplit(smtp.last_for(email).link)
    assert link.path == "/api/auth/email/verify-link"
    clicked = client.get(f"{link.path}?{link.query}", follow_redirects=False)
    assert clicked.status_code == 302
    target = urlsplit(clicked.headers["location"])
    assert f"{target.scheme}://{target.netloc}{target.path}" == REDIRECT
    assert parse_qs(target.query) == {"insforge_status": ["success"], "insforge_type": ["verify_email"]}
    again = client.get(f"{link.path}?{link.query}", follow_redirects=False)
    assert again.status_code == 302
    failed = parse_qs(urlsplit(again.headers["location"]).query)
    assert failed["insforge_status"] == ["error"]
    assert failed["insforge_type"] == ["verify_email"]
    assert client.get("/api/auth/email/verify-link?token=abc").status_code == 400
    assert client.get("/api/auth/email/verify-link?token=" + "0" * 64).status_code == 400
    assert client.post("/api/auth/sessions", json={"email": email, "password": PASSWORD}).status_code == 200


def test_resend_verification_is_generic(client: TestClient, smtp: SmtpServer, config: Any) -> None:
    config(requireEmailVerification=True)
    email = new_email()
    client.post("/api/auth/users", json={"email": email, "password": PASSWORD})
    known = client.post("/api/auth/email/send-verification", json={"email": email})
    unknown_email = new_email()
    unknown = client.post("/api/auth/email/send-verification", json={"email": unknown_email})
    assert known.status_code == unknown.status_code == 202
    assert known.json() == unknown.json()
    assert len(smtp.mail_for(email, count=2)) == 2
    assert smtp.mail_for(unknown_email, timeout=0) == []


def test_sign_in_with_an_emailed_code_creates_a_verified_user(client: TestClient, smtp: SmtpServer) -> None:
    email = new_email()
    sent = client.post("/api/auth/email/send-otp", json={"email": email})
    assert sent.status_code == 202
    code = smtp.last_for(email).code
    assert smtp.last_for(email).message["Subject"] == "Your sign-in code"
    body = {"method": "otp", "email": email, "otp": code, "name": "Otto"}
    signed_in = client.post("/api/auth/sessions?client_type=mobile", json=body)
    assert signed_in.status_code == 200, signed_in.text
    assert signed_in.json()["user"]["emailVerified"] is True
    assert signed_in.json()["user"]["profile"] == {"name": "Otto"}
    assert client.post("/api/auth/sessions?client_type=mobile", json=body).status_code == 400
    assert client.post("/api/auth/sessions", json={"method": "magic", "email": email}).status_code == 400


def test_password_reset_with_a_code(client: TestClient, smtp: SmtpServer) -> None:
    email = new_email()
    old_session = sign_up(client, email)
    assert client.post("/api/auth/email/send-reset-password", json={"email": email}).status_code == 202
    code = smtp.last_for(email).code
    exchanged = client.post(
        "/api/auth/email/exchange-reset-password-token", json={"email": email, "code": code}
    )
    assert exchanged.status_code == 200, exchanged.text
    token = exchanged.json()["token"]
    assert exchanged.json()["expiresAt"].endswith("Z")
    again = client.post("/api/auth/email/exchange-reset-password-token", json={"email": email, "code": code})
    assert again.status_code == 400
    weak = client.post("/api/auth/email/reset-password", json={"newPassword": "abc", "otp": token})
    assert (weak.status_code, weak.json()["error"]) == (400, "INVALID_INPUT")
    reset = client.post(
        "/api/auth/email/reset-password", json={"newPassword": "a new password 2", "otp": token}
    )
    assert reset.status_code == 200
    assert "message" in reset.json()
    assert (
        client.post(
            "/api/auth/email/reset-password", json={"newPassword": "x again 3", "otp": token}
        ).status_code
        == 400
    )
    assert client.post("/api/auth/sessions", json={"email": email, "password": PASSWORD}).status_code == 401
    ok = client.post("/api/auth/sessions", json={"email": email, "password": "a new password 2"})
    assert ok.status_code == 200
    stale = client.post(
        "/api/auth/refresh?client_type=mobile", json={"refreshToken": old_session["refreshToken"]}
    )
    assert stale.status_code == 401
    client.cookies.clear()


def test_password_reset_with_a_link(client: TestClient, smtp: SmtpServer, config: Any) -> None:
    config(resetPasswordMethod="link", allowedRedirectUrls=["http://localhost:3000/auth"])
    email = new_email()
    sign_up(client, email)
    no_redirect = client.post("/api/auth/email/send-reset-password", json={"email": email})
    assert no_redirect.status_code == 400
    sent = client.post("/api/auth/email/send-reset-password", json={"email": email, "redirectTo": REDIRECT})
    assert sent.status_code == 202
    link = urlsplit(smtp.last_for(email).link)
    assert link.path == "/api/auth/email/reset-password-link"
    opened = client.get(f"{link.path}?{link.query}", follow_redirects=False)
    assert opened.status_code == 302
    query = parse_qs(urlsplit(opened.headers["location"]).query)
    assert query["insforge_status"] == ["ready"]
    assert query["insforge_type"] == ["reset_password"]
    token = query["token"][0]
    reset = client.post(
        "/api/auth/email/reset-password", json={"newPassword": "link password 9", "otp": token}
    )
    assert reset.status_code == 200
    assert (
        client.post("/api/auth/sessions", json={"email": email, "password": "link password 9"}).status_code
        == 200
    )
    reopened = client.get(f"{link.path}?{link.query}", follow_redirects=False)
    assert parse_qs(urlsplit(reopened.headers["location"]).query)["insforge_status"] == ["error"]
    client.cookies.clear()


def test_a_reset_link_cannot_be_sent_to_another_host_through_a_backslash(
    client: TestClient, smtp: SmtpServer, config: Any
) -> None:
    """A browser ends an http(s) URL's host at a backslash: `http://evil.example\\@localhost:3000/auth` is
    evil.example to it, so a reset link to there would hand the reset token to evil.example."""
    config(resetPasswordMethod="link", allowedRedirectUrls=["http://localhost:3000/auth"])
    email = new_email()
    sign_up(client, email)
    crafted = "http://evil.example\\@localhost:3000/auth/done"
    sent = client.post("/api/auth/email/send-reset-password", json={"email": email, "redirectTo": crafted})
    assert sent.status_code == 400, sent.text
    assert sent.json()["error"] == "INVALID_INPUT"
    assert smtp.mail_for(email, timeout=0.5) == []


def test_reset_for_an_unknown_address_looks_the_same_and_sends_nothing(
    client: TestClient, smtp: SmtpServer
) -> None:
    known_email = new_email()
    sign_up(client, known_email)
    unknown_email = new_email()
    known = client.post("/api/auth/email/send-reset-password", json={"email": known_email})
    unknown = client.post("/api/auth/email/send-reset-password", json={"email": unknown_email})
    assert (known.status_code, known.json()) == (unknown.status_code, unknown.json())
    assert len(smtp.mail_for(known_email)) == 1
    assert smtp.mail_for(unknown_email, timeout=0) == []


def test_templates_are_listed_edited_and_used(
    client: TestClient, admin_headers: dict[str, str], smtp: SmtpServer, database_url: str
) -> None:
    listed = client.get("/api/auth/email-templates", headers=admin_headers).json()["data"]
    assert sorted(t["templateType"] for t in listed) == [
        "email-verification-code",
        "email-verification-link",
        "request-otp",
        "reset-password-code",
        "reset-password-link",
    ]
    original = next(t for t in listed if t["templateType"] == "request-otp")
    change = {"subject": "Code for {{ email }}", "bodyHtml": "<p>Use <b>{{ code }}</b> now, {{ '<x>' }}</p>"}
    updated = client.put("/api/auth/email-templates/request-otp", json=change, headers=admin_headers)
    try:
        assert updated.status_code == 200
        assert updated.json()["subject"] == change["subject"]
        email = new_email()
        client.post("/api/auth/email/send-otp", json={"email": email})
        mail = smtp.last_for(email)
        assert mail.message["Subject"] == f"Code for {email}"
        assert "&lt;x&gt;" in mail.html
    finally:  # other tests read the default template
        restore = {"subject": original["subject"], "bodyHtml": original["bodyHtml"]}
        client.put("/api/auth/email-templates/request-otp", json=restore, headers=admin_headers)
    assert client.put("/api/auth/email-templates/nope", json=change, headers=admin_headers).status_code == 400
    broken = {"subject": "x", "bodyHtml": "{{ code "}
    assert (
        client.put("/api/auth/email-templates/request-otp", json=broken, headers=admin_headers).status_code
        == 400
    )
    assert client.put("/api/auth/email-templates/request-otp", json=change).status_code == 401
    with psycopg.connect(database_url) as conn:
        actions = [r[0] for r in conn.execute("select action from system.audit_logs").fetchall()]
    assert "UPDATE_EMAIL_TEMPLATE" in actions


@pytest.fixture(scope="module")
def strict_app(settings: Settings, smtp: SmtpServer) -> Iterator[TestClient]:
    """A second app over the same database with InsForge's tight limits."""
    strict = auth_settings(email_send_limit=3, verify_limit=4, sign_in_limit=3)
    app = create_app(settings.model_copy(update={"auth": strict}))
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


@pytest.fixture
def strict_client(strict_app: TestClient, database_url: str) -> TestClient:
    """The strict app, its counters (shared with every app over this database) started afresh."""
    with psycopg.connect(database_url) as conn:
        conn.execute("truncate system.rate_limits")
    return strict_app


def test_send_endpoints_are_rate_limited_per_client(strict_client: TestClient) -> None:
    answers = [strict_client.post("/api/auth/email/send-otp", json={"email": new_email()}) for _ in range(4)]
    assert [a.status_code for a in answers] == [202, 202, 202, 429]
    assert answers[-1].json()["error"] == "TOO_MANY_REQUESTS"
    assert answers[-1].json()["message"] == (  # InsForge's words
        "Too many send email verification requests from this IP. Please try again in 15 minutes."
    )


def test_verify_endpoints_are_rate_limited_per_client(strict_client: TestClient) -> None:
    body = {"email": new_email(), "otp": "000000"}
    answers = [strict_client.post("/api/auth/email/verify", json=body) for _ in range(5)]
    assert [a.status_code for a in answers] == [400, 400, 400, 400, 429]
    assert answers[-1].json()["message"] == (
        "Too many verification attempts from this IP. Please try again in 15 minutes."
    )


def test_password_sign_in_is_rate_limited_per_address(strict_client: TestClient) -> None:
    email = new_email()
    answers = [
        strict_client.post("/api/auth/sessions", json={"email": email, "password": "wrong"}).status_code
        for _ in range(4)
    ]
    assert answers == [401, 401, 401, 429]


def test_each_address_has_a_cooldown(
    client: TestClient, admin_headers: dict[str, str], smtp: SmtpServer
) -> None:
    client.put("/api/auth/smtp-config", json=smtp_body(smtp, minIntervalSeconds=60), headers=admin_headers)
    try:
        email = new_email()
        assert client.post("/api/auth/email/send-otp", json={"email": email}).status_code == 202
        again = client.post("/api/auth/email/send-otp", json={"email": email})
        assert again.status_code == 429
        assert again.json()["message"].startswith("Please wait ")
        assert again.json()["message"].endswith(" seconds before requesting another code for this email")
        assert client.post("/api/auth/email/send-otp", json={"email": new_email()}).status_code == 202
        assert len(smtp.mail_for(email)) == 1
    finally:
        client.put("/api/auth/smtp-config", json=smtp_body(smtp), headers=admin_headers)


def test_delivery_failures_are_logged_without_secrets(
    client: TestClient, admin_headers: dict[str, str], smtp: SmtpServer, caplog: pytest.LogCaptureFixture
) -> None:
    # A wrong password, and a relay that is down (nothing listens on that port).
    broken = [
        smtp_body(smtp, password="not-the-smtp-password"),
        smtp_body(smtp, port=free_port(), password="not-the-smtp-password"),
    ]
    try:
        for config in broken:
            assert client.put("/api/auth/smtp-config", json=config, headers=admin_headers).status_code == 200
            email = new_email()
            caplog.clear()
            with caplog.at_level("ERROR", logger="kilnbase.auth.email"):
                assert client.post("/api/auth/email/send-otp", json={"email": email}).status_code == 202
                failures = eventually(
                    lambda: [r for r in caplog.records if r.getMessage() == "email delivery failed"]
                )
            assert smtp.mail_for(email, timeout=0) == []
            assert len(failures) == 1
            logged = str(failures[0].__dict__)
            assert "not-the-smtp-password" not in logged
            assert email not in logged
    finally:
        client.put("/api/auth/smtp-config", json=smtp_body(smtp), headers=admin_headers)


def test_without_smtp_sending_a_code_or_link_is_a_503_that_says_what_to_configure(
    client: TestClient, admin_headers: dict[str, str], smtp: SmtpServer, config: Any
) -> None:
    disabled = smtp_body(smtp, enabled=False)
    assert client.put("/api/auth/smtp-config", json=disabled, headers=admin_headers).status_code == 200
    try:
        email = new_email()
        for path, what in [
            ("/api/auth/email/send-otp", "a sign-in code"),
            ("/api/auth/email/send-verification", "a verification code"),
            ("/api/auth/email/send-reset-password", "a password reset code"),
        ]:
            response = client.post(path, json={"email": email})
            body = response.json()
            assert (response.status_code, body["error"]) == (503, "EMAIL_PROVIDER_NOT_CONFIGURED")
            assert body["message"] == f"Email is not configured on this project, so {what} cannot be sent."
            assert "PUT /api/auth/smtp-config" in body["nextActions"]
        assert smtp.mail_for(email, timeout=0) == []
        required = client.put(
            "/api/auth/config", json={"requireEmailVerification": True}, headers=admin_headers
        )
        assert (required.status_code, required.json()["error"]) == (400, "EMAIL_PROVIDER_NOT_CONFIGURED")
        assert "no new user could ever verify" in required.json()["message"]
    finally:
        client.put("/api/auth/smtp-config", json=smtp_body(smtp), headers=admin_headers)
    config(requireEmailVerification=True)
    refused = client.put("/api/auth/smtp-config", json=disabled, headers=admin_headers)
    assert (refused.status_code, refused.json()["error"]) == (400, "INVALID_INPUT")
    assert "requireEmailVerification" in refused.json()["nextActions"]


def test_a_sign_up_that_needs_verification_is_refused_when_smtp_went_away(
    client: TestClient, admin_headers: dict[str, str], smtp: SmtpServer, config: Any, database_url: str
) -> None:
    config(requireEmailVerification=True)
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("update auth.smtp_config set enabled = false")
    try:
        email = new_email()
        response = client.post("/api/auth/users", json={"email": email, "password": PASSWORD})
        assert (response.status_code, response.json()["error"]) == (503, "EMAIL_PROVIDER_NOT_CONFIGURED")
        listed = client.get(f"/api/auth/users?search={email}", headers=admin_headers).json()
        assert listed["pagination"]["total"] == 0
    finally:
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute("update auth.smtp_config set enabled = true")
