"""Passwords: what a new username and password must be, and argon2id hashing and checking
(each check is about 0.2 s of CPU over 0.12 s on two CPUs, argon2-cffi's defaults measured in
2026, run in a thread and bounded by `auth.hash_concurrency`).
The threads are their own: signing in never waits behind other work of the default pool."""

import asyncio
import contextlib
import re
from concurrent.futures import ThreadPoolExecutor

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from server import values
from server.errors import BadRequest

MIN_PASSWORD = 8
USERNAME = re.compile(r"[A-Za-z0-9._-]{3,64}")  # fullmatch: no "$" before a newline

_hasher = PasswordHasher()
_threads = ThreadPoolExecutor(thread_name_prefix="argon2")  # threads made when first needed
# Verified against when the username does not exist, so both failures take the same time.
_DUMMY_HASH = _hasher.hash("not a real password")


def validate_username(username: str) -> str:
    """The username, when acceptable for a new account; 400 otherwise."""
    if not USERNAME.fullmatch(username):
        raise BadRequest("Invalid username: 3-64 characters of letters, digits, '.', '_' or '-'")
    return username


def validate_password(password: str, name: str = "password") -> str:
    """The password, when long enough to be accepted as a new one and one a login takes (no
    NUL); 400 naming `name` otherwise."""
    values.text(password, name)
    if len(password) < MIN_PASSWORD:
        raise BadRequest(f"Invalid {name}: at least {MIN_PASSWORD} characters")
    return password


async def hash_password(password: str, slots: asyncio.Semaphore | None = None) -> str:
    """The argon2id hash, computed in a thread; `slots` bounds how many hash at once."""
    async with slots or contextlib.nullcontext():
        return await asyncio.get_running_loop().run_in_executor(_threads, _hasher.hash, password)


async def verify_password(
    password_hash: str | None, password: str, slots: asyncio.Semaphore | None = None
) -> bool:
    def verify() -> bool:
        try:
            return _hasher.verify(password_hash or _DUMMY_HASH, password) and bool(password_hash)
        except (VerificationError, InvalidHashError):
            return False

    # Each check is about 0.2 s of CPU: unbounded, a flood of them starves every other request.
    async with slots or contextlib.nullcontext():
        return await asyncio.get_running_loop().run_in_executor(_threads, verify)
