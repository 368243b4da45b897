"""Outgoing mail: SMTP when SMTP_HOST is set, the log otherwise (development)."""

from __future__ import annotations

import asyncio
import smtplib
import ssl
from dataclasses import dataclass
from email.message import EmailMessage

import structlog

from keel.config import Settings

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Mail:
    to: str
    subject: str
    body: str


class Mailer:
    """Sends mail off the event loop. Failures are logged, never raised to a request."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    async def send(self, mail: Mail) -> None:
        if not self.settings.smtp_host:
            # No SMTP configured: the log is the outbox (development and tests).
            log.info("mail.outbox", to=mail.to, subject=mail.subject, body=mail.body)
            return
        try:
            await asyncio.to_thread(self._send_smtp, mail)
        except (OSError, smtplib.SMTPException) as exc:
            log.error("mail.failed", to=mail.to, subject=mail.subject, error=type(exc).__name__)
        else:
            log.info("mail.sent", to=mail.to, subject=mail.subject)

    def _send_smtp(self, mail: Mail) -> None:
        settings = self.settings
        assert settings.smtp_host is not None  # noqa: S101 - checked by send()
        message = EmailMessage()
        message["From"] = settings.mail_from
        message["To"] = mail.to
        message["Subject"] = mail.subject
        message.set_content(mail.body)
        with smtplib.SMTP(settings.smtp_host, settings.smtp_port, timeout=10) as smtp:
            if settings.smtp_starttls:
                smtp.starttls(context=ssl.create_default_context())
            if settings.smtp_username and settings.smtp_password:
                smtp.login(settings.smtp_username, settings.smtp_password.get_secret_value())
            smtp.send_message(message)
