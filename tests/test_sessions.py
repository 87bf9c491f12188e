"""Issue 12, item 8: a password change ends the user's other sessions (their refresh tokens)."""

from tests.helpers import register

ALICE = {"username": "alice", "password": "password1"}


async def session(client) -> dict[str, str]:
    """The cookies of a fresh login, as a Cookie header of their own (another browser)."""
    response = await client.post("/auth/login", json=ALICE)
    assert response.status == 202
    cookies = {name: morsel.value for name, morsel in response.cookies.items()}
    client.session.cookie_jar.clear()  # each session sends only its own cookies
    return {"Cookie": "; ".join(f"{name}={value}" for name, value in cookies.items())}


async def test_password_change_ends_other_sessions(client, conn) -> None:
    await register(client)
    mine, other = await session(client), await session(client)
    change = {"password": "new-password", "current_password": "password1"}
    response = await client.post("/user/update", json=change, headers=mine)
    assert (response.status, await response.json()) == (200, {"message": "User updated"})
    refused = await client.get("/auth/refresh", headers=other)
    assert (refused.status, await refused.json()) == (401, {"message": "Invalid or expired token"})
    kept = await client.get("/auth/refresh", headers=mine)
    assert (kept.status, (await kept.json())["message"]) == (200, "Token refreshed")
    live = await conn.fetchval("SELECT count(*) FROM refresh_tokens WHERE revoked_at IS NULL")
    assert live == 1


async def test_profile_change_without_password_keeps_sessions(client, conn) -> None:
    await register(client)
    mine, other = await session(client), await session(client)
    response = await client.post("/user/update", json={"display_name": "Alice"}, headers=mine)
    assert response.status == 200
    assert (await client.get("/auth/refresh", headers=other)).status == 200
