"""What the auth domain mails. A token always stands on a line of its own."""

from __future__ import annotations

from keel.config import Settings
from keel.core.mail import Mail

API = "/api/v1/auth"


def password_reset(settings: Settings, to: str, token: str) -> Mail:
    return Mail(
        to=to,
        subject="Reset your Keel password",
        body=(
            f"Use this token to set a new password within {settings.password_reset_minutes} "
            f"minutes:\n\n{token}\n\nPOST {settings.public_base_url}{API}/password-reset/confirm"
            ' with {"token": ..., "new_password": ...}'
        ),
    )


def verify_email(settings: Settings, to: str, token: str) -> Mail:
    return Mail(
        to=to,
        subject="Confirm your email for Keel",
        body=(
            f"Confirm your email within {settings.verify_email_hours} hours with this token:"
            f"\n\n{token}\n\nPOST {settings.public_base_url}{API}/verify/confirm"
        ),
    )


def confirm_new_email(settings: Settings, to: str, username: str, token: str) -> Mail:
    return Mail(
        to=to,
        subject="Confirm your new email for Keel",
        body=(
            f"Confirm this address for the Keel account {username} within "
            f"{settings.verify_email_hours} hours with this token:\n\n{token}\n\n"
            f"POST {settings.public_base_url}{API}/verify/confirm\n\n"
            "Until then the account keeps its old address."
        ),
    )


def email_change_notice(settings: Settings, to: str, username: str, new_email: str) -> Mail:
    return Mail(
        to=to,
        subject="Your Keel email is about to change",
        body=(
            f"Someone signed in to your Keel account {username} asked to change its "
            f"email to {new_email}. It changes only when that address confirms it.\n\n"
            "If this wasn't you, reset your password now: that cancels the change and ends "
            f"every session.\n\nPOST {settings.public_base_url}{API}/password-reset/request"
        ),
    )


def address_in_use_notice(settings: Settings, to: str) -> Mail:
    """To a registered address someone tried to move another account to."""
    return Mail(
        to=to,
        subject="Someone tried to use your email on Keel",
        body=(
            "Someone asked to move another Keel account to this address. It already "
            "belongs to your account, so nothing changed and nothing needs doing.\n\n"
            f"Forgot your password? POST {settings.public_base_url}{API}/password-reset/request"
        ),
    )


def confirm_signup(settings: Settings, to: str, username: str, token: str) -> Mail:
    return Mail(
        to=to,
        subject="Finish signing up for Keel",
        body=(
            f"Confirm this address within {settings.verify_email_hours} hours to create the "
            f"Keel account {username}:\n\n{token}\n\n"
            f'POST {settings.public_base_url}{API}/signup/confirm with {{"token": ...}}'
        ),
    )


def signup_attempt_notice(settings: Settings, to: str) -> Mail:
    """To a registered address someone tried to sign up with."""
    return Mail(
        to=to,
        subject="Someone tried to sign up with your email on Keel",
        body=(
            "Someone tried to create a Keel account with this address. It already has an "
            "account, so nothing was created. If it was you, sign in instead.\n\n"
            f"Forgot your password? POST {settings.public_base_url}{API}/password-reset/request"
        ),
    )
