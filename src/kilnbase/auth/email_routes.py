"""Email flows under `/api/auth/email`, an app's own emails (`/api/email/send-raw`), and the admin's SMTP
settings and templates. Handlers parse the request, call the service (`EmailFlows`, `RawEmails`,
`AuthAdmin`), and shape the answer.

The send endpoints always answer 202 with the same message whether or not the address has an account; what
depends on the account happens after the answer (see `mailer`)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from kilnbase.auth.edge import SessionEdge, client_type_of, public_actor
from kilnbase.auth.email_flows import EmailCode, EmailOnly, PasswordReset, ResetCodeExchange
from kilnbase.auth.email_templates import TemplateUpdate
from kilnbase.auth.raw_email import RawEmail
from kilnbase.auth.services import Auth
from kilnbase.auth.smtp_settings import SmtpConfigUpdate
from kilnbase.auth.validation import read_body
from kilnbase.http.admin_gate import admin_actor
from kilnbase.http.errors import ApiError
from kilnbase.http.request_context import actor_of, require_credential
from kilnbase.http.responses import json_response

_TOKEN_LENGTH = 64


def _accepted(message: str) -> Response:
    return json_response({"success": True, "message": message}, 202)


def _link_token(request: Request) -> str:
    token = request.query_params.get("token", "")
    if len(token) != _TOKEN_LENGTH or any(c not in "0123456789abcdefABCDEF" for c in token):
        raise ApiError(
            400,
            "INVALID_INPUT",
            "token: token must be a 64-character hexadecimal token",
            "Use the link from the email as it is.",
        )
    return token


def _redirect(target: str | None, unknown: str) -> Response:
    """The browser sent on from an emailed link; a 400 for a link we do not know (nowhere to send it)."""
    if target is None:
        raise ApiError(400, "INVALID_INPUT", unknown, "Request a new email.")
    return RedirectResponse(target, status_code=302)


class EmailRoutes:
    def __init__(self, auth: Auth) -> None:
        self.flows = auth.email
        self.raw = auth.raw_email
        self.admin = auth.admin
        self.edge = SessionEdge(auth.parts)

    async def send_otp(self, request: Request) -> Response:
        actor = public_actor(request)
        await self.flows.send_sign_in_code(actor, await read_body(request, EmailOnly))
        return _accepted("If the email can sign in, we have sent a sign-in code. Please check your inbox.")

    async def send_verification(self, request: Request) -> Response:
        actor = public_actor(request)
        method = await self.flows.send_verification(actor, await read_body(request, EmailOnly))
        what = "verification link" if method == "link" else "verification code"
        return _accepted(f"If your email is registered, we have sent you a {what}. Please check your inbox.")

    async def verify_email(self, request: Request) -> Response:
        actor = public_actor(request)
        client_type = client_type_of(request)
        result = await self.flows.verify_email_with_code(
            actor, await read_body(request, EmailCode), client_type
        )
        return self.edge.response(request, result, client_type)

    async def verify_link(self, request: Request) -> Response:
        target = await self.flows.verify_email_with_link(public_actor(request), _link_token(request))
        return _redirect(target, "Invalid or expired verification token")

    async def send_reset_password(self, request: Request) -> Response:
        actor = public_actor(request)
        method = await self.flows.send_reset_password(actor, await read_body(request, EmailOnly))
        what = "password reset link" if method == "link" else "password reset code"
        return _accepted(f"If your email is registered, we have sent you a {what}. Please check your inbox.")

    async def exchange_reset_token(self, request: Request) -> Response:
        actor = public_actor(request)
        token, expires_at = await self.flows.exchange_reset_code(
            actor, await read_body(request, ResetCodeExchange)
        )
        return json_response({"token": token, "expiresAt": expires_at.isoformat().replace("+00:00", "Z")})

    async def reset_password(self, request: Request) -> Response:
        actor = public_actor(request)
        await self.flows.reset_password(actor, await read_body(request, PasswordReset))
        return json_response({"message": "Password has been reset successfully. Please sign in again."})

    async def reset_password_link(self, request: Request) -> Response:
        target = await self.flows.reset_password_link(public_actor(request), _link_token(request))
        return _redirect(target, "Invalid or expired verification token")

    async def send_raw(self, request: Request) -> Response:
        """InsForge's `verifyUser` gate (a key or a token, not the anon role), then the body, then `{}`, or
        the recipients the SMTP server refused while it took the email for the others."""
        actor = actor_of(request, require_credential(request))
        self.raw.check_sender(actor)
        refused = await self.raw.send(actor, await read_body(request, RawEmail))
        if not refused:
            return json_response({})
        recipients = [{"email": item.address, "smtpCode": item.code} for item in refused]
        return json_response({"refusedRecipients": recipients})

    async def get_smtp_config(self, request: Request) -> Response:
        return json_response(await self.admin.smtp_config(admin_actor(request)))

    async def put_smtp_config(self, request: Request) -> Response:
        actor = admin_actor(request)
        change = await read_body(request, SmtpConfigUpdate)
        return json_response(await self.admin.update_smtp_config(actor, change))

    async def list_templates(self, request: Request) -> Response:
        return json_response({"data": await self.admin.templates(admin_actor(request))})

    async def put_template(self, request: Request) -> Response:
        actor = admin_actor(request)
        change = await read_body(request, TemplateUpdate)
        return json_response(
            await self.admin.update_template(actor, request.path_params["template_type"], change)
        )

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/api/auth/email/send-otp", self.send_otp, methods=["POST"]),
            Route("/api/auth/email/send-verification", self.send_verification, methods=["POST"]),
            Route("/api/auth/email/verify", self.verify_email, methods=["POST"]),
            Route("/api/auth/email/verify-link", self.verify_link, methods=["GET"]),
            Route("/api/auth/email/send-reset-password", self.send_reset_password, methods=["POST"]),
            Route(
                "/api/auth/email/exchange-reset-password-token", self.exchange_reset_token, methods=["POST"]
            ),
            Route("/api/auth/email/reset-password", self.reset_password, methods=["POST"]),
            Route("/api/auth/email/reset-password-link", self.reset_password_link, methods=["GET"]),
            Route("/api/email/send-raw", self.send_raw, methods=["POST"]),
            Route("/api/auth/smtp-config", self.get_smtp_config, methods=["GET"]),
            Route("/api/auth/smtp-config", self.put_smtp_config, methods=["PUT"]),
            Route("/api/auth/email-templates", self.list_templates, methods=["GET"]),
            Route("/api/auth/email-templates/{template_type}", self.put_template, methods=["PUT"]),
        ]
