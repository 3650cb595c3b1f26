"""A real SMTP server on loopback (aiosmtpd) that requires a login and keeps what it receives."""

from __future__ import annotations

import email
import email.policy
import re
import threading
import time
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from tests.support.servers import free_port


@dataclass
class Received:
    to: list[str]
    message: EmailMessage

    @property
    def html(self) -> str:
        part = self.message.get_body(preferencelist=("html",))
        assert part is not None
        return str(part.get_content())

    @property
    def code(self) -> str:
        match = re.search(r"\b(\d{6})\b", self.html)
        assert match, self.html
        return match[1]

    @property
    def link(self) -> str:
        match = re.search(r'href="([^"]+)"', self.html)
        assert match, self.html
        return match[1].replace("&amp;", "&")


@dataclass
class SmtpServer:
    username: str
    password: str
    port: int = field(default_factory=free_port)
    received: list[Received] = field(default_factory=list)
    logins: list[tuple[str, str]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_DATA(self, _server: Any, _session: Any, envelope: Any) -> str:  # aiosmtpd hook name
        parsed = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        with self._lock:
            self.received.append(Received(list(envelope.rcpt_tos), parsed))
        return "250 Message accepted"

    def _authenticate(
        self, _server: Any, _session: Any, _envelope: Any, _mechanism: str, data: Any
    ) -> AuthResult:
        if not isinstance(data, LoginPassword):
            return AuthResult(success=False, handled=False)
        login, password = data.login.decode(), data.password.decode()
        self.logins.append((login, password))
        # handled=False: aiosmtpd then answers 535 itself (with the default, it answers nothing at all).
        return AuthResult(success=login == self.username and password == self.password, handled=False)

    def start(self) -> None:
        self._controller = Controller(
            self,
            hostname="127.0.0.1",
            port=self.port,
            authenticator=self._authenticate,
            auth_required=True,
            auth_require_tls=False,
        )
        self._controller.start()

    def stop(self) -> None:
        self._controller.stop()

    def mail_for(self, address: str, *, count: int = 1, timeout: float = 10) -> list[Received]:
        """The messages to `address`, waiting (briefly) until `count` have arrived."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                found = [m for m in self.received if address in m.to]
            if len(found) >= count or time.monotonic() > deadline:
                return found
            time.sleep(0.01)

    def last_for(self, address: str, count: int = 1) -> Received:
        found = self.mail_for(address, count=count)
        assert len(found) >= count, f"expected {count} message(s) to {address}, got {len(found)}"
        return found[-1]
