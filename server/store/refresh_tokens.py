"""The refresh_tokens table: sessions, by the SHA-256 of their refresh token's jti, revocable."""

from datetime import datetime

from server.database.sql import query
from server.models import Db, User
from server.store import users


async def add(
    db: Db, token_sha256: bytes, user_id: int, expires: datetime, generation: int
) -> bool:
    """Store a token of the user's token generation `generation`; False (nothing stored) when
    that is no longer the current one (the password changed since it was checked)."""
    added = await db.fetchval(
        query("add_refresh_token"), token_sha256, user_id, expires, generation
    )
    return added is not None


async def get_user(db: Db, token_sha256: bytes) -> User | None:
    """The owner of a live (unrevoked, unexpired) refresh token."""
    row = await db.fetchrow(query("get_refresh_token_user"), token_sha256)
    return users.user_of(row) if row else None


async def extend_session(db: Db, user_id: int, session: str, expires: datetime) -> bool:
    """Make the user's live session `session` last at least until `expires`; whether it was
    live."""
    prefix = bytes.fromhex(session)
    return await db.fetchval(query("extend_session"), user_id, prefix, expires) is not None


async def revoke_session(db: Db, user_id: int, session: str) -> bool:
    """Revoke the user's session `session` (auth.session_id of its token); whether it was not
    revoked yet."""
    prefix = bytes.fromhex(session)
    return await db.fetchval(query("revoke_session"), user_id, prefix) is not None


async def prune(db: Db, user_id: int, keep: int) -> None:
    """Remove the user's tokens that can never refresh again (expired or revoked), and their
    live ones but the newest `keep` (the oldest sessions end)."""
    await db.execute(query("prune_refresh_tokens"), user_id, keep)


async def forget_ended(db: Db) -> None:
    """Remove every user's tokens that can never refresh again (expired or revoked)."""
    await db.execute(query("forget_ended_refresh_tokens"))


async def revoke_others(db: Db, user_id: int, keep: str | None) -> None:
    """Revoke every live session of the user except `keep` (a session id; None: all of them)."""
    prefix = None if keep is None else bytes.fromhex(keep)
    await db.execute(query("revoke_other_sessions"), user_id, prefix)
