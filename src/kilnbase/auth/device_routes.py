"""Device authorization endpoints under `/api/auth/device` (InsForge's `device.routes.ts`), and the
verification page at `/auth/device` that a person opens to approve a device.

The page is server-rendered (Jinja2, escaped) and holds no secret: the user code in its form comes from its
own query string, and the person's session exists only in the page's memory, from a sign-in it makes with
`fetch`, and is ended once they have decided. Every call it makes carries that access token as a bearer
header, never a cookie, so another site cannot make a browser approve a device (no CSRF); a strict Content
Security Policy lets only the page's own script (by nonce) run and forbids framing it (no clickjacking of its
Approve button)."""

from __future__ import annotations

import secrets

from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Route

from kilnbase.auth.device_authorizations import (
    USER_CODE_PATTERN,
    DeviceAuthorizations,
    DeviceStart,
    DeviceTokenRequest,
    UserCodeBody,
    normalize_user_code,
)
from kilnbase.auth.edge import SessionEdge, public_actor
from kilnbase.auth.gate import optional_token_actor, person_actor
from kilnbase.auth.parts import AuthParts
from kilnbase.auth.validation import read_body
from kilnbase.http.responses import json_response

_templates = Environment(loader=PackageLoader("kilnbase.auth", "templates"), autoescape=select_autoescape())
#: The longest `user_code` the page reads from its query string (a code is 11 characters).
_PAGE_CODE_MAX = 64


def _page_headers(nonce: str) -> dict[str, str]:
    return {
        "Content-Security-Policy": (
            f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; "
            "connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'"
        ),
        "X-Frame-Options": "DENY",
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-store",
        "X-Content-Type-Options": "nosniff",
    }


class DeviceRoutes:
    def __init__(self, parts: AuthParts, devices: DeviceAuthorizations) -> None:
        self.devices = devices
        self.edge = SessionEdge(parts)
        self.base_url = parts.base_url

    async def create(self, request: Request) -> Response:
        actor = public_actor(request)
        started = await self.devices.create(actor, await read_body(request, DeviceStart))
        verification_uri = self.devices.verification_uri
        return json_response(
            {
                "deviceCode": started.device_code,
                "userCode": started.user_code,
                "verificationUri": verification_uri,
                "verificationUriComplete": f"{verification_uri}?user_code={started.user_code}",
                "expiresIn": started.expires_in,
                "interval": started.interval,
            }
        )

    async def token(self, request: Request) -> Response:
        actor = public_actor(request)
        body = await read_body(request, DeviceTokenRequest)
        result = await self.devices.exchange(actor, body)
        return self.edge.response(request, result, "desktop")

    async def lookup(self, request: Request) -> Response:
        actor = optional_token_actor(request)
        body = await read_body(request, UserCodeBody)
        return json_response((await self.devices.lookup(actor, body.userCode)).json())

    async def approve(self, request: Request) -> Response:
        actor = person_actor(request)
        body = await read_body(request, UserCodeBody)
        return json_response((await self.devices.approve(actor, body.userCode)).json())

    async def deny(self, request: Request) -> Response:
        actor = person_actor(request)
        body = await read_body(request, UserCodeBody)
        return json_response((await self.devices.deny(actor, body.userCode)).json())

    async def page(self, request: Request) -> Response:
        """The verification page; `?user_code=` fills in the code (when it is one)."""
        given = request.query_params.get("user_code", "")[:_PAGE_CODE_MAX]
        code = normalize_user_code(given)
        nonce = secrets.token_urlsafe(18)
        html = _templates.get_template("device.html").render(
            user_code=code if USER_CODE_PATTERN.match(code) else "",
            malformed=bool(given) and not USER_CODE_PATTERN.match(code),
            base_url=self.base_url,
            nonce=nonce,
        )
        return HTMLResponse(html, headers=_page_headers(nonce))

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/api/auth/device/authorizations", self.create, methods=["POST"]),
            Route("/api/auth/device/token", self.token, methods=["POST"]),
            Route("/api/auth/device/authorizations/lookup", self.lookup, methods=["POST"]),
            Route("/api/auth/device/authorizations/approve", self.approve, methods=["POST"]),
            Route("/api/auth/device/authorizations/deny", self.deny, methods=["POST"]),
            Route("/auth/device", self.page, methods=["GET"]),
        ]
