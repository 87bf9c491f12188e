"""Validation of `POST /user/update` bodies: profile fields and a password change.

Everything is checked before anything is stored: one bad field and nothing changes.
"""

from dataclasses import dataclass
from typing import Any

from server.accounts.passwords import validate_password
from server.errors import BadRequest
from server.parsing import field

FIELDS = ("display_name", "email", "password", "current_password")
MAX_DISPLAY_NAME = 128
MAX_EMAIL = 254


@dataclass(frozen=True)
class ProfileUpdate:
    changes: dict[str, str | None]  # display_name and email to set; None clears one
    password: str | None = None  # the new password, when changing it
    current_password: str | None = None  # required with `password`


def _text(body: dict[str, Any], name: str, max_length: int) -> str | None:
    value: str | None = field(body, name, str, required=False)  # null: clear the field
    if value is not None and len(value) > max_length:
        raise BadRequest(f"Invalid {name}: at most {max_length} characters")
    return value


def _changes(body: dict[str, Any]) -> dict[str, str | None]:
    changes = {}
    if "display_name" in body:
        changes["display_name"] = _text(body, "display_name", MAX_DISPLAY_NAME)
    if "email" in body:
        email = _text(body, "email", MAX_EMAIL)
        if email is not None and "@" not in email:
            raise BadRequest("Invalid email: must contain @")
        changes["email"] = email
    return changes


def _password_change(body: dict[str, Any]) -> tuple[str | None, str | None]:
    if "password" not in body and "current_password" not in body:
        return None, None
    # Present but null is a mistyped field here: there is no "no password" to change to.
    for name in ("password", "current_password"):
        if name in body and body[name] is None:
            raise BadRequest(f"Field {name} must be of type string")
    password = field(body, "password", str)
    current = field(body, "current_password", str)
    return validate_password(password), current


def parse_profile_update(body: dict[str, Any]) -> ProfileUpdate:
    """The update a body asks for; 400 for an unknown or invalid field or an empty body."""
    unknown = sorted(set(body) - set(FIELDS))
    if unknown:
        raise BadRequest(f"Unknown field: {unknown[0]}")
    if not body:
        raise BadRequest(f"Nothing to update: give at least one of {', '.join(FIELDS[:3])}")
    password, current = _password_change(body)
    return ProfileUpdate(_changes(body), password, current)
