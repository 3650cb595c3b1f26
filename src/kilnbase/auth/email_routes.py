"""Email flows under `/api/auth/email`, and the admin's SMTP settings and templates.

The send endpoints always answer 202 with the same message whether or not the address has an account; mail
goes out after the response (see `mailer`). Each endpoint is rate-limited per client address, and the send
endpoints also per recipient (the SMTP config's `minIntervalSeconds`).
"""

from __future__ import annotations

from functools import partial

from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from kilnbase import audit
from kilnbase.auth import accounts, email_templates, mailer, smtp_settings
from kilnbase.auth.edge import context_of, session_response
from kilnbase.auth.mailer import PendingEmail
from kilnbase.auth.services import Auth
from kilnbase.http.errors import ApiError
from kilnbase.http.json_body import parse, read_json
from kilnbase.http.rate_limit import enforce
from kilnbase.http.request_context import actor_of, client_ip, principal_of, require_admin
from kilnbase.http.responses import json_response

_TOKEN_LENGTH = 64


def delivery(pending: PendingEmail | None) -> BackgroundTask:
    return BackgroundTask(mailer.deliver, pending)


async def _limit_sends(auth: Auth, request: Request, email: str) -> None:
    settings = auth.services.settings
    window = settings.rate_limit_window_seconds
    await enforce(auth.rate_limiter, f"email-send:{client_ip(request)}", settings.email_send_limit, window)
    async with auth.database.as_owner() as cur:
        row = await smtp_settings.load(cur)
    interval = row["min_interval_seconds"] if row is not None else 60
    if interval > 0:
        await enforce(auth.rate_limiter, f"email-cooldown:{email}", 1, interval)


async def _limit_verifications(auth: Auth, request: Request) -> None:
    settings = auth.services.settings
    await enforce(
        auth.rate_limiter,
        f"verify:{client_ip(request)}",
        settings.verify_limit,
        settings.rate_limit_window_seconds,
    )


def _accepted(message: str, pending: PendingEmail | None) -> Response:
    response = json_response({"success": True, "message": message}, 202)
    response.background = delivery(pending)
    return response


async def send_otp(auth: Auth, request: Request) -> Response:
    principal_of(request)
    ctx = context_of(auth, request)
    body = parse(accounts.EmailOnly, await read_json(request))
    await _limit_sends(auth, request, body.email)
    pending = await accounts.send_sign_in_code(ctx, body)
    return _accepted(
        "If the email can sign in, we have sent a sign-in code. Please check your inbox.", pending
    )


async def send_verification(auth: Auth, request: Request) -> Response:
    principal_of(request)
    ctx = context_of(auth, request)
    body = parse(accounts.EmailOnly, await read_json(request))
    await _limit_sends(auth, request, body.email)
    method, pending = await accounts.send_verification(ctx, body)
    what = "verification link" if method == "link" else "verification code"
    return _accepted(
        f"If your email is registered, we have sent you a {what}. Please check your inbox.", pending
    )


async def verify_email(auth: Auth, request: Request) -> Response:
    principal_of(request)
    ctx = context_of(auth, request)
    await _limit_verifications(auth, request)
    body = parse(accounts.EmailCode, await read_json(request))
    result = await accounts.verify_email_with_code(ctx, body)
    return session_response(auth, request, result, ctx.client_type)


def _link_token(request: Request) -> str:
    token = request.query_params.get("token", "")
    if len(token) != _TOKEN_LENGTH or any(c not in "0123456789abcdef" for c in token):
        raise ApiError(400, "INVALID_INPUT", "The link is malformed; use the link from the email as it is.")
    return token


async def verify_link(auth: Auth, request: Request) -> Response:
    await _limit_verifications(auth, request)
    target = await accounts.verify_email_with_link(context_of(auth, request), _link_token(request))
    if target is None:
        raise ApiError(400, "INVALID_INPUT", "Invalid or expired verification link.", "Request a new email.")
    return RedirectResponse(target, status_code=302)


async def send_reset_password(auth: Auth, request: Request) -> Response:
    principal_of(request)
    ctx = context_of(auth, request)
    body = parse(accounts.EmailOnly, await read_json(request))
    await _limit_sends(auth, request, body.email)
    method, pending = await accounts.send_reset_password(ctx, body)
    what = "password reset link" if method == "link" else "password reset code"
    return _accepted(
        f"If your email is registered, we have sent you a {what}. Please check your inbox.", pending
    )


async def exchange_reset_token(auth: Auth, request: Request) -> Response:
    principal_of(request)
    await _limit_verifications(auth, request)
    body = parse(accounts.ResetCodeExchange, await read_json(request))
    token, expires_at = await accounts.exchange_reset_code(context_of(auth, request), body)
    return json_response({"token": token, "expiresAt": expires_at.isoformat().replace("+00:00", "Z")})


async def reset_password(auth: Auth, request: Request) -> Response:
    principal_of(request)
    await _limit_verifications(auth, request)
    body = parse(accounts.PasswordReset, await read_json(request))
    await accounts.reset_password(context_of(auth, request), body)
    return json_response({"message": "Password has been reset successfully. Please sign in again."})


async def reset_password_link(auth: Auth, request: Request) -> Response:
    await _limit_verifications(auth, request)
    target = await accounts.reset_password_link(context_of(auth, request), _link_token(request))
    if target is None:
        raise ApiError(
            400, "INVALID_INPUT", "Invalid or expired password reset link.", "Request a new email."
        )
    return RedirectResponse(target, status_code=302)


async def get_smtp_config(auth: Auth, request: Request) -> Response:
    require_admin(request)
    async with auth.database.as_owner() as cur:
        row = await smtp_settings.load(cur)
    return json_response(smtp_settings.smtp_json(row))


async def put_smtp_config(auth: Auth, request: Request) -> Response:
    principal = require_admin(request)
    change = parse(smtp_settings.SmtpConfigUpdate, await read_json(request))
    async with auth.database.as_owner() as cur:
        row = await smtp_settings.upsert(cur, change, auth.secret_box)
        details = change.model_dump(exclude={"password"})
        details["passwordChanged"] = change.password is not None
        await audit.record(cur, actor_of(request, principal), "UPDATE_SMTP_CONFIG", "AUTH", details)
    return json_response(smtp_settings.smtp_json(row))


async def list_templates(auth: Auth, request: Request) -> Response:
    require_admin(request)
    async with auth.database.as_owner() as cur:
        rows = await email_templates.list_all(cur)
    return json_response({"data": [email_templates.template_json(r) for r in rows]})


async def put_template(auth: Auth, request: Request) -> Response:
    principal = require_admin(request)
    template_type = request.path_params["template_type"]
    if template_type not in email_templates.TEMPLATE_TYPES:
        raise ApiError(
            400,
            "INVALID_INPUT",
            f"Unknown template type; use one of {', '.join(email_templates.TEMPLATE_TYPES)}.",
        )
    change = parse(email_templates.TemplateUpdate, await read_json(request))
    async with auth.database.as_owner() as cur:
        row = await email_templates.update(cur, template_type, change)
        assert row is not None, "all template types are seeded"
        await audit.record(
            cur,
            actor_of(request, principal),
            "UPDATE_EMAIL_TEMPLATE",
            "AUTH",
            {"templateType": template_type},
        )
    return json_response(email_templates.template_json(row))


def routes(auth: Auth) -> list[BaseRoute]:
    return [
        Route("/api/auth/email/send-otp", partial(send_otp, auth), methods=["POST"]),
        Route("/api/auth/email/send-verification", partial(send_verification, auth), methods=["POST"]),
        Route("/api/auth/email/verify", partial(verify_email, auth), methods=["POST"]),
        Route("/api/auth/email/verify-link", partial(verify_link, auth), methods=["GET"]),
        Route("/api/auth/email/send-reset-password", partial(send_reset_password, auth), methods=["POST"]),
        Route(
            "/api/auth/email/exchange-reset-password-token",
            partial(exchange_reset_token, auth),
            methods=["POST"],
        ),
        Route("/api/auth/email/reset-password", partial(reset_password, auth), methods=["POST"]),
        Route("/api/auth/email/reset-password-link", partial(reset_password_link, auth), methods=["GET"]),
        Route("/api/auth/smtp-config", partial(get_smtp_config, auth), methods=["GET"]),
        Route("/api/auth/smtp-config", partial(put_smtp_config, auth), methods=["PUT"]),
        Route("/api/auth/email-templates", partial(list_templates, auth), methods=["GET"]),
        Route("/api/auth/email-templates/{template_type}", partial(put_template, auth), methods=["PUT"]),
    ]
