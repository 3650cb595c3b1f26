"""Email flows under `/api/auth/email`, and the admin's SMTP settings and templates.

The send endpoints always answer 202 with the same message whether or not the address has an account; mail
goes out after the response (see `mailer`). Each endpoint is rate-limited per client address, and the send
endpoints also per recipient (the SMTP config's `minIntervalSeconds`).
"""

from __future__ import annotations

from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from kilnbase.auth import accounts, email_templates, mailer, smtp_settings
from kilnbase.auth.edge import client_ip, context_of, db_ip, json_response, session_response
from kilnbase.auth.mailer import PendingEmail
from kilnbase.auth.validation import parse, read_json
from kilnbase.http.errors import ApiError
from kilnbase.http.rate_limit import enforce
from kilnbase.http.request_context import principal_of, require_admin
from kilnbase.logs import audit
from kilnbase.server.runtime import runtime_of

_TOKEN_LENGTH = 64


def delivery(pending: PendingEmail | None) -> BackgroundTask:
    return BackgroundTask(mailer.deliver, pending)


async def _limit_sends(request: Request, email: str) -> None:
    runtime = runtime_of(request)
    settings = runtime.auth_settings
    window = settings.rate_limit_window_seconds
    await enforce(runtime.rate_limiter, f"email-send:{client_ip(request)}", settings.email_send_limit, window)
    async with runtime.database.as_owner() as cur:
        row = await smtp_settings.load(cur)
    interval = row["min_interval_seconds"] if row is not None else 60
    if interval > 0:
        await enforce(runtime.rate_limiter, f"email-cooldown:{email}", 1, interval)


async def _limit_verifications(request: Request) -> None:
    runtime = runtime_of(request)
    settings = runtime.auth_settings
    await enforce(
        runtime.rate_limiter,
        f"verify:{client_ip(request)}",
        settings.verify_limit,
        settings.rate_limit_window_seconds,
    )


def _accepted(message: str, pending: PendingEmail | None) -> Response:
    response = json_response({"success": True, "message": message}, 202)
    response.background = delivery(pending)
    return response


async def send_otp(request: Request) -> Response:
    principal_of(request)
    ctx = context_of(request)
    body = parse(accounts.EmailOnly, await read_json(request))
    await _limit_sends(request, body.email)
    pending = await accounts.send_sign_in_code(ctx, body)
    return _accepted(
        "If the email can sign in, we have sent a sign-in code. Please check your inbox.", pending
    )


async def send_verification(request: Request) -> Response:
    principal_of(request)
    ctx = context_of(request)
    body = parse(accounts.EmailOnly, await read_json(request))
    await _limit_sends(request, body.email)
    method, pending = await accounts.send_verification(ctx, body)
    what = "verification link" if method == "link" else "verification code"
    return _accepted(
        f"If your email is registered, we have sent you a {what}. Please check your inbox.", pending
    )


async def verify_email(request: Request) -> Response:
    principal_of(request)
    ctx = context_of(request)
    await _limit_verifications(request)
    body = parse(accounts.EmailCode, await read_json(request))
    result = await accounts.verify_email_with_code(ctx, body)
    return session_response(request, result, ctx.client_type)


def _link_token(request: Request) -> str:
    token = request.query_params.get("token", "")
    if len(token) != _TOKEN_LENGTH or any(c not in "0123456789abcdef" for c in token):
        raise ApiError(400, "INVALID_INPUT", "The link is malformed; use the link from the email as it is.")
    return token


async def verify_link(request: Request) -> Response:
    await _limit_verifications(request)
    target = await accounts.verify_email_with_link(context_of(request), _link_token(request))
    if target is None:
        raise ApiError(400, "INVALID_INPUT", "Invalid or expired verification link.", "Request a new email.")
    return RedirectResponse(target, status_code=302)


async def send_reset_password(request: Request) -> Response:
    principal_of(request)
    ctx = context_of(request)
    body = parse(accounts.EmailOnly, await read_json(request))
    await _limit_sends(request, body.email)
    method, pending = await accounts.send_reset_password(ctx, body)
    what = "password reset link" if method == "link" else "password reset code"
    return _accepted(
        f"If your email is registered, we have sent you a {what}. Please check your inbox.", pending
    )


async def exchange_reset_token(request: Request) -> Response:
    principal_of(request)
    await _limit_verifications(request)
    body = parse(accounts.ResetCodeExchange, await read_json(request))
    token, expires_at = await accounts.exchange_reset_code(context_of(request), body)
    return json_response({"token": token, "expiresAt": expires_at.isoformat().replace("+00:00", "Z")})


async def reset_password(request: Request) -> Response:
    principal_of(request)
    await _limit_verifications(request)
    body = parse(accounts.PasswordReset, await read_json(request))
    await accounts.reset_password(context_of(request), body)
    return json_response({"message": "Password has been reset successfully. Please sign in again."})


async def reset_password_link(request: Request) -> Response:
    await _limit_verifications(request)
    target = await accounts.reset_password_link(context_of(request), _link_token(request))
    if target is None:
        raise ApiError(
            400, "INVALID_INPUT", "Invalid or expired password reset link.", "Request a new email."
        )
    return RedirectResponse(target, status_code=302)


async def get_smtp_config(request: Request) -> Response:
    require_admin(request)
    async with runtime_of(request).database.as_owner() as cur:
        row = await smtp_settings.load(cur)
    return json_response(smtp_settings.smtp_json(row))


async def put_smtp_config(request: Request) -> Response:
    principal = require_admin(request)
    change = parse(smtp_settings.SmtpConfigUpdate, await read_json(request))
    runtime = runtime_of(request)
    async with runtime.database.as_owner() as cur:
        row = await smtp_settings.upsert(cur, change, runtime.secret_box)
        details = change.model_dump(exclude={"password"})
        details["passwordChanged"] = change.password is not None
        await audit.record(
            cur,
            actor=principal.actor,
            action="UPDATE_SMTP_CONFIG",
            module="AUTH",
            details=details,
            ip=db_ip(request),
        )
    return json_response(smtp_settings.smtp_json(row))


async def list_templates(request: Request) -> Response:
    require_admin(request)
    async with runtime_of(request).database.as_owner() as cur:
        rows = await email_templates.list_all(cur)
    return json_response({"data": [email_templates.template_json(r) for r in rows]})


async def put_template(request: Request) -> Response:
    principal = require_admin(request)
    template_type = request.path_params["template_type"]
    if template_type not in email_templates.TEMPLATE_TYPES:
        raise ApiError(
            400,
            "INVALID_INPUT",
            f"Unknown template type; use one of {', '.join(email_templates.TEMPLATE_TYPES)}.",
        )
    change = parse(email_templates.TemplateUpdate, await read_json(request))
    async with runtime_of(request).database.as_owner() as cur:
        row = await email_templates.update(cur, template_type, change)
        assert row is not None, "all template types are seeded"
        await audit.record(
            cur,
            actor=principal.actor,
            action="UPDATE_EMAIL_TEMPLATE",
            module="AUTH",
            details={"templateType": template_type},
            ip=db_ip(request),
        )
    return json_response(email_templates.template_json(row))


routes: list[BaseRoute] = [
    Route("/api/auth/email/send-otp", send_otp, methods=["POST"]),
    Route("/api/auth/email/send-verification", send_verification, methods=["POST"]),
    Route("/api/auth/email/verify", verify_email, methods=["POST"]),
    Route("/api/auth/email/verify-link", verify_link, methods=["GET"]),
    Route("/api/auth/email/send-reset-password", send_reset_password, methods=["POST"]),
    Route("/api/auth/email/exchange-reset-password-token", exchange_reset_token, methods=["POST"]),
    Route("/api/auth/email/reset-password", reset_password, methods=["POST"]),
    Route("/api/auth/email/reset-password-link", reset_password_link, methods=["GET"]),
    Route("/api/auth/smtp-config", get_smtp_config, methods=["GET"]),
    Route("/api/auth/smtp-config", put_smtp_config, methods=["PUT"]),
    Route("/api/auth/email-templates", list_templates, methods=["GET"]),
    Route("/api/auth/email-templates/{template_type}", put_template, methods=["PUT"]),
]
