"""The users table: accounts, logins and profiles."""

import dataclasses

from asyncpg import Record

from server.database.sql import query
from server.models import Conn, Db, User

# A password change: the new hash, and the hash the current password was checked against.
PasswordChange = tuple[str, str]


async def create(db: Db, username: str, password_hash: str) -> int | None:
    """The new user's id, or None when the username is taken."""
    user_id: int | None = await db.fetchval(query("create_user"), username, password_hash)
    return user_id


async def sign_in_sso(
    db: Db, username: str, realm_user: tuple[str, str], profile: tuple[str | None, str | None]
) -> tuple[int, int] | None:
    """The id and token generation of the Keycloak user `username`, created (with this profile:
    name, email) if new; None when the account is bound to another realm user (issuer, sub)."""
    row = await db.fetchrow(query("sign_in_sso_user"), username, *profile, *realm_user)
    return (row["id"], row["token_generation"]) if row else None


async def get_login(db: Db, username: str) -> tuple[int, str, int] | None:
    """The id, password hash and token generation of the local user `username`."""
    row = await db.fetchrow(query("get_login"), username)
    return (row["id"], row["password_hash"], row["token_generation"]) if row else None


def user_of(row: Record) -> User:
    return User(row["id"], row["username"], row["source"], row["token_generation"])


async def get(db: Db, user_id: int) -> User | None:
    """The user with their live sessions (their ids: models.User.sessions)."""
    row = await db.fetchrow(query("get_user"), user_id)
    if row is None:
        return None
    sessions = frozenset(bytes(prefix).hex() for prefix in row["sessions"])
    return dataclasses.replace(user_of(row), sessions=sessions)


async def get_profile(db: Db, user_id: int) -> dict[str, str | None] | None:
    row = await db.fetchrow(query("get_profile"), user_id)
    return dict(row) if row else None


async def get_password_hash(db: Db, user_id: int) -> str | None:
    password_hash: str | None = await db.fetchval(query("get_password_hash"), user_id)
    return password_hash


async def update_profile(
    db: Db, user_id: int, changes: dict[str, str | None], password: PasswordChange | None
) -> int | None:
    """Apply the given profile fields (a key present with None clears it) and password hash;
    the user's token generation (a new one with a new password). None, and nothing changed:
    no such user, or the password is no longer the one checked."""
    new_hash, checked_hash = password or (None, None)
    generation: int | None = await db.fetchval(
        query("update_profile"),
        user_id,
        "display_name" in changes,
        changes.get("display_name"),
        "email" in changes,
        changes.get("email"),
        new_hash,
        checked_hash,
    )
    return generation


async def lock_user(conn: Conn, user_id: int) -> bool:
    """Lock a user's row for the transaction; False: no such user (deleted)."""
    return await conn.fetchval(query("lock_owner"), user_id, None) is not None


async def lock_owner(conn: Conn, sim_pk: int) -> int:
    """Lock the row of a simulation's owner for the transaction; the owner's id."""
    locked: int = await conn.fetchval(query("lock_owner"), None, sim_pk)
    return locked
