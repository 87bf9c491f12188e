"""`POST /auth/keycloak` and `DELETE /auth/keycloak`: signing in with a Keycloak access token.

The realm is tests.fakes.openid_provider (fixtures `provider`, `sso_config`, `sso`): a real HTTP
server with real keys; every token here is really signed, and the server fetches the realm's keys
over HTTP as it would from Keycloak.
"""

import asyncio
import gzip
import logging
import math
import os
import time
import tracemalloc
from typing import Any

import asyncpg
import jwt
import orjson
import pytest
from aiohttp.test_utils import TestClient

from server.app import create_app
from tests.fakes.http_proxy import HttpProxy
from tests.fakes.openid_provider import (
    BACKEND,
    CONFIG_PATH,
    JWKS_PATH,
    REALM_PATH,
    REFETCH_INTERVAL,
    UI,
    USERNAME,
    OpenIdProvider,
    SigningKey,
    hmac_token,
    unsigned_token,
)
from tests.helpers import SEED_CLUSTERS_RESPONSE, login, register, submit

WELCOME = {"message": "Login successful"}
NOT_AVAILABLE = {"message": "Service is not available"}
SSO_STATUS = {
    "message": "User status",
    "username": USERNAME,
    "source": "keycloak",
    "display_name": "Alice Example",
    "email": "alice@example.org",
}


async def sign_in(
    client: TestClient, token: str, username: str = USERNAME
) -> tuple[int, dict[str, Any]]:
    response = await client.post(
        "/auth/keycloak", json={"username": username}, headers={"Authorization": f"Bearer {token}"}
    )
    return response.status, await response.json()


async def status_of(client: TestClient) -> tuple[int, dict[str, Any]]:
    response = await client.get("/auth/status")
    return response.status, await response.json()


async def users_in(conn: asyncpg.Connection) -> list[tuple[str, str]]:
    rows = await conn.fetch("SELECT username, source FROM users ORDER BY id")
    return [(row["username"], row["source"]) for row in rows]


async def job_ids_listed(client: TestClient) -> list[str]:
    response = await client.get("/user/simulations")
    assert response.status == 200
    return [item["job_id"] for item in (await response.json())["simulations"]]


async def signs_in(
    client: TestClient, provider: OpenIdProvider, key: SigningKey | None = None, **changes: Any
) -> None:
    """Sign in with a token of the realm (claims changed by `changes`); the whole answer checked."""
    expires = int(time.time()) + 300
    token = provider.token(key, **{"exp": expires, **changes})
    assert await sign_in(client, token) == (202, {**WELCOME, "access_exp": expires * 1000})


def denied(message: str) -> tuple[int, dict[str, str]]:
    return 403, {"message": message}


# --- signing in -------------------------------------------------------------------------------


@pytest.mark.parametrize("key_name", ["rsa", "ec"])
async def test_good_token_signs_in(sso, provider, realm_keys, conn, key_name):
    expires = int(time.time()) + 300
    token = provider.token(realm_keys[key_name], exp=expires)
    assert await sign_in(sso, token) == (202, {**WELCOME, "access_exp": expires * 1000})
    assert await status_of(sso) == (200, SSO_STATUS)
    assert await users_in(conn) == [(USERNAME, "keycloak")]


async def test_signed_in_user_sees_the_seed_clusters_example(sso, provider):
    await signs_in(sso, provider)
    response = await sso.get("/clusters")
    assert (response.status, await response.json()) == (200, SEED_CLUSTERS_RESPONSE)


async def test_local_user_gets_403_from_clusters(sso):
    await login(sso, USERNAME)
    response = await sso.get("/clusters")
    assert (response.status, await response.json()) == denied(
        "Local users cannot access HPC clusters"
    )


@pytest.mark.parametrize("path", ["/jobs/batch", "/ui/jobs/batch"])
async def test_local_user_gets_403_from_batch_status_and_cancel(sso, provider, path):
    """spec/api.md: `/jobs/batch` (POST, GET, DELETE) is for SSO users; local users get 403,
    and their job is left as it was. An SSO user follows a job there."""
    await login(sso, "bob")
    job_id = await submit(sso)
    refused = denied("Local users cannot access HPC clusters")
    for method in ("GET", "DELETE"):
        response = await sso.request(method, path, params={"job_id": job_id})
        assert (response.status, await response.json()) == refused
    response = await sso.get("/jobs/direct", params={"job_id": job_id})
    assert (await response.json())["job_state"] != "CANCELED"
    await signs_in(sso, provider)
    job_id = await submit(sso)
    response = await sso.get(path, params={"job_id": job_id})
    assert response.status == 200, await response.text()


async def test_session_ends_with_the_keycloak_token(sso, provider):
    """The access cookie never outlives the Keycloak token, nor the server's access_ttl (900 s)."""
    expires = int(time.time()) + 60
    response = await post_token(sso, provider.token(exp=expires))
    assert (response.status, await response.json()) == (
        202,
        {**WELCOME, "access_exp": expires * 1000},
    )
    cookie = response.cookies["access_token"]
    assert jwt.decode(cookie.value, options={"verify_signature": False})["exp"] == expires
    assert 55 <= int(cookie["max-age"]) <= 60

    before = math.ceil(time.time() + 900)
    status, body = await sign_in(sso, provider.token(exp=int(time.time()) + 7200))
    after = math.ceil(time.time() + 900)
    assert (status, body) == (202, {**WELCOME, "access_exp": body["access_exp"]})
    assert before * 1000 <= body["access_exp"] <= after * 1000


async def test_sign_in_again_is_the_same_user_and_keeps_the_profile(sso, provider, conn):
    """The UI signs in again before access_exp; the account is found, not made again, and
    the profile the user edited since is not overwritten by the token's."""
    await signs_in(sso, provider)
    response = await sso.post("/user/update", json={"display_name": "Dr Alice"})
    assert (response.status, await response.json()) == (200, {"message": "User updated"})
    await signs_in(sso, provider, name="Someone Else")
    assert await status_of(sso) == (200, {**SSO_STATUS, "display_name": "Dr Alice"})
    assert await users_in(conn) == [(USERNAME, "keycloak")]


async def test_profile_claims_that_would_not_pass_user_update_are_left_out(sso, provider):
    await signs_in(sso, provider, name="x" * 129, email="not-an-address")
    assert await status_of(sso) == (200, {**SSO_STATUS, "display_name": None, "email": None})


async def test_a_local_user_of_the_same_name_is_a_different_user(sso, provider, conn):
    """Both sign in, each as themselves; neither sees nor reaches the other's simulations."""
    await login(sso, USERNAME)
    local_job = await submit(sso)
    await signs_in(sso, provider)
    assert await status_of(sso) == (200, SSO_STATUS)
    assert await job_ids_listed(sso) == []
    sso_job = await submit(sso)
    assert await job_ids_listed(sso) == [sso_job]
    response = await sso.get(f"/inputs?job_id={local_job}")
    assert (response.status, await response.json()) == denied("Simulation belongs to another user")

    response = await sso.post("/auth/login", json={"username": USERNAME, "password": "password1"})
    assert response.status == 202
    local_status = {"message": "User status", "username": USERNAME, "source": "local"}
    assert await status_of(sso) == (200, {**local_status, "display_name": None, "email": None})
    assert await job_ids_listed(sso) == [local_job]
    response = await sso.get(f"/inputs?job_id={sso_job}")
    assert (response.status, await response.json()) == denied("Simulation belongs to another user")
    assert await users_in(conn) == [(USERNAME, "local"), (USERNAME, "keycloak")]


OTHER_SUB = "9d2c4e61-7a0b-4f3e-8c1d-5b6a7e8f9a0b"
ANOTHER_REALM_USER = denied(
    "This username's account belongs to another Keycloak user (a different sub): ask the operator"
)


async def bindings(conn: asyncpg.Connection) -> list[tuple[str, str | None, str | None]]:
    rows = await conn.fetch("SELECT username, sso_issuer, sso_subject FROM users ORDER BY id")
    return [tuple(row) for row in rows]


async def test_a_username_the_realm_gave_to_another_user_is_refused(sso, provider, conn):
    """The realm deleted alice and made a new user alice (another sub): the new one must not
    reach the first one's simulations; the first one still signs in."""
    await signs_in(sso, provider)
    job_id = await submit(sso)
    bound = await bindings(conn)
    assert bound == [(USERNAME, provider.issuer, provider.claims()["sub"])]
    response = await sso.post(
        "/auth/keycloak",
        json={"username": USERNAME},
        headers={"Authorization": f"Bearer {provider.token(sub=OTHER_SUB)}"},
    )
    assert (response.status, await response.json()) == ANOTHER_REALM_USER
    assert "access_token" not in response.cookies
    assert await bindings(conn) == bound
    await signs_in(sso, provider)
    assert await job_ids_listed(sso) == [job_id]


async def test_an_account_made_before_the_binding_is_bound_at_its_next_sign_in(sso, provider, conn):
    user_id = await conn.fetchval(
        "INSERT INTO users (username, source) VALUES ($1, 'keycloak') RETURNING id", USERNAME
    )
    await signs_in(sso, provider, sub=OTHER_SUB)
    assert await conn.fetchval("SELECT id FROM users") == user_id
    assert await bindings(conn) == [(USERNAME, provider.issuer, OTHER_SUB)]
    assert await sign_in(sso, provider.token()) == ANOTHER_REALM_USER


async def test_a_realm_of_another_issuer_takes_the_accounts_over(
    sso, provider, conn, aiohttp_server, aiohttp_client, sso_config, realm_keys
):
    """The operator moved to a new realm (another issuer): its user of the same username gets
    the account, and is bound to it from then on."""
    await signs_in(sso, provider)
    job_id = await submit(sso)
    new_realm = OpenIdProvider([realm_keys["rsa"]])
    new_realm.issuer = str((await aiohttp_server(new_realm.app())).make_url(REALM_PATH))
    moved = await aiohttp_client(create_app(sso_config(issuer=new_realm.issuer)))
    await signs_in(moved, new_realm, sub=OTHER_SUB)
    assert await job_ids_listed(moved) == [job_id]
    assert await bindings(conn) == [(USERNAME, new_realm.issuer, OTHER_SUB)]
    assert await sign_in(moved, new_realm.token()) == ANOTHER_REALM_USER


async def test_a_local_account_can_be_registered_after_the_sso_one(sso, provider, conn):
    await signs_in(sso, provider)
    await register(sso, USERNAME)
    response = await sso.put("/auth/register", json={"username": USERNAME, "password": "password2"})
    assert (response.status, await response.json()) == (409, {"message": "Username already taken"})
    assert await users_in(conn) == [(USERNAME, "keycloak"), (USERNAME, "local")]


def refresh_cookie(client: TestClient) -> str:
    return client.session.cookie_jar.filter_cookies(client.make_url("/"))["refresh_token"].value


async def refreshed_with(client: TestClient, token: str) -> tuple[int, dict[str, Any]]:
    client.session.cookie_jar.clear()
    response = await client.get("/auth/refresh", cookies={"refresh_token": token})
    return response.status, await response.json()


async def test_sign_in_drops_a_local_refresh_cookie(sso, provider):
    """Otherwise GET /auth/refresh would bring the local user back after the SSO sign-in. The
    session is revoked too: a copy of the cookie would have kept it for refresh_ttl."""
    await login(sso, USERNAME)
    local = refresh_cookie(sso)
    response = await post_token(sso, provider.token())
    assert response.status == 202
    assert response.cookies["refresh_token"].value == ""
    assert int(response.cookies["refresh_token"]["max-age"]) == 0
    response = await sso.get("/auth/refresh")
    assert (response.status, await response.json()) == (401, {"message": "No token provided"})
    assert await refreshed_with(sso, local) == (401, {"message": "Invalid or expired token"})


async def test_delete_ends_a_local_session_whose_cookie_it_clears(sso):
    """As DELETE /auth/logout: the refresh token is revoked, not only its cookie cleared (the
    browser lost its only handle on a session a copied cookie kept for refresh_ttl)."""
    await login(sso, "bob")
    local = refresh_cookie(sso)
    response = await sso.delete("/auth/keycloak")
    assert (response.status, await response.json()) == (200, {"message": "Logout successful"})
    assert response.cookies["refresh_token"].value == ""
    assert await refreshed_with(sso, local) == (401, {"message": "Invalid or expired token"})


@pytest.mark.parametrize("path", ["/auth/refresh", "/ui/auth/refresh"])
async def test_a_refresh_does_not_end_a_keycloak_session(sso, provider, path):
    """A Keycloak session has no refresh cookie: a refresh is 401 and leaves the session alone.
    Before, the UI dialect's cleared the access cookie too, so a link to it from any site (a
    GET: SameSite=Lax sends the cookies) signed a Keycloak user out."""
    await signs_in(sso, provider)
    response = await sso.get(path)
    assert (response.status, await response.json()) == (401, {"message": "No token provided"})
    assert "Set-Cookie" not in response.headers
    assert (await status_of(sso))[0] == 200


async def test_delete_clears_the_cookie(sso, provider):
    await signs_in(sso, provider)
    response = await sso.delete("/auth/keycloak")
    assert (response.status, await response.json()) == (200, {"message": "Logout successful"})
    assert response.cookies["access_token"].value == ""
    assert int(response.cookies["access_token"]["max-age"]) == 0
    assert await status_of(sso) == (401, {"message": "No token provided"})


def access_cookie(client: TestClient) -> dict[str, str]:
    """The client's access cookie as a Cookie header of its own (a copy someone kept)."""
    jar = client.session.cookie_jar.filter_cookies(client.make_url("/"))
    return {"Cookie": f"access_token={jar['access_token'].value}"}


async def test_sign_out_ends_a_copy_of_the_access_cookie(sso, provider, conn):
    """A copy of an SSO access cookie went on working after sign-out, until the Keycloak token
    expired; a local session's ended at once."""
    await signs_in(sso, provider)
    copy = access_cookie(sso)
    response = await sso.delete("/auth/keycloak")
    assert (response.status, await response.json()) == (200, {"message": "Logout successful"})
    sso.session.cookie_jar.clear()
    response = await sso.get("/auth/status", headers=copy)
    assert (response.status, await response.json()) == (
        401,
        {"message": "Invalid or expired token"},
    )


async def test_signing_in_again_leaves_the_previous_access_cookie_working(sso, provider):
    """The UI signs in again with a fresh token while requests with the cookie it had are under
    way: those must not be refused."""
    await signs_in(sso, provider)
    before = access_cookie(sso)
    await signs_in(sso, provider)
    sso.session.cookie_jar.clear()
    assert await status_of_cookie(sso, before) == (200, SSO_STATUS)


async def status_of_cookie(client: TestClient, headers: dict[str, str]) -> tuple[int, Any]:
    """GET /auth/status with only `headers` (the client's own cookies dropped)."""
    client.session.cookie_jar.clear()
    response = await client.get("/auth/status", headers=headers)
    return response.status, await response.json()


async def test_delete_without_a_session_is_fine(sso):
    """Like logout: signing out twice, or never signed in, is not an error."""
    for _ in range(2):
        response = await sso.delete("/auth/keycloak")
        assert (response.status, await response.json()) == (200, {"message": "Logout successful"})


# --- what is refused --------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["post", "delete"])
async def test_without_keycloak_configured_the_service_is_not_available(client, method):
    headers = {"Authorization": "Bearer abc.def.ghi"}
    response = await getattr(client, method)(
        "/auth/keycloak", json={"username": USERNAME}, headers=headers
    )
    assert (response.status, await response.json()) == (403, NOT_AVAILABLE)


@pytest.mark.parametrize("authorization", [None, "", "Bearer", "Bearer  ", "Basic dXNlcjpwYXNz"])
async def test_no_bearer_token(sso, conn, authorization):
    headers = {} if authorization is None else {"Authorization": authorization}
    response = await sso.post("/auth/keycloak", json={"username": USERNAME}, headers=headers)
    assert (response.status, await response.json()) == (401, {"message": "No token provided"})
    assert await users_in(conn) == []


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({}, "Missing field: username"),
        ({"username": 7}, "Field username must be of type string"),
        ([USERNAME], "JSON body must be an object"),
    ],
)
async def test_bad_body(sso, provider, conn, body, message):
    headers = {"Authorization": f"Bearer {provider.token()}"}
    response = await sso.post("/auth/keycloak", json=body, headers=headers)
    assert (response.status, await response.json()) == (400, {"message": message})
    assert await users_in(conn) == []


async def test_body_username_must_be_the_tokens(sso, provider, conn):
    response = await post_token(sso, provider.token(), username="plgbob")
    assert (response.status, await response.json()) == denied(
        "Username does not match the token's preferred_username"
    )
    assert "access_token" not in response.cookies
    assert await status_of(sso) == (401, {"message": "No token provided"})
    assert await users_in(conn) == []


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (
            {"aud": ["account"], "azp": "other-client"},
            "Invalid token: not issued for this service (aud, azp)",
        ),
        ({"aud": None, "azp": None}, "Invalid token: not issued for this service (aud, azp)"),
        (
            {"aud": [{"id": BACKEND}], "azp": [BACKEND]},
            "Invalid token: not issued for this service (aud, azp)",
        ),
        ({"iss": "http://127.0.0.1:1/realms/other"}, "Invalid token: wrong issuer"),
        ({"iss": None}, "Invalid token: no iss claim"),
        ({"exp": int(time.time()) - 120}, "Invalid token: expired"),
        ({"exp": None}, "Invalid token: no exp claim"),
        (
            {"iat": int(time.time()) + 3600},
            "Invalid token: not valid yet (iat or nbf in the future)",
        ),
        ({"typ": "ID"}, "Invalid token: not an access token (typ)"),
        ({"plgridAccessServices": None}, "No access: the token has no plgridAccessServices claim"),
        (
            {"plgridAccessServices": ["PLG_OTHER_SERVICE"]},
            "No access: the token's plgridAccessServices does not include PLG_YAPTIDE_ACCESS",
        ),
        ({"preferred_username": None}, "Invalid token: no preferred_username claim"),
        ({"sub": None}, "Invalid token: no sub claim"),
        ({"sub": ""}, "Invalid token: no sub claim"),
        ({"sub": "s" * 256}, "Invalid token: the sub claim is longer than 255 characters"),
        (
            {"preferred_username": "u" * 256},
            "Invalid token: the preferred_username claim is longer than 255 characters",
        ),
        ({"sub": 5}, "Invalid token: malformed claims"),
    ],
)
async def test_claims_that_fail_a_check(sso, provider, conn, changes, message):
    assert await sign_in(sso, provider.token(**changes)) == denied(message)
    assert await users_in(conn) == []


@pytest.mark.parametrize(
    "changes",
    [
        {"aud": BACKEND, "azp": UI},  # aud as a single string (the audience mapper's way)
        {"aud": "account", "azp": BACKEND},  # the backend's own client asked for the token
        {"plgridAccessServices": "PLG_YAPTIDE_ACCESS"},  # one value, not a list
        {"typ": None, "email": None, "name": None},
    ],
)
async def test_claims_that_pass(sso, provider, changes):
    await signs_in(sso, provider, **changes)


async def test_access_rule_is_configurable(aiohttp_client, sso_config, provider, conn):
    app = create_app(sso_config(access_claim="groups", access_value="yaptide-users"))
    client = await aiohttp_client(app)
    assert await sign_in(client, provider.token()) == denied(
        "No access: the token has no groups claim"
    )
    await signs_in(client, provider, groups=["yaptide-users"])


async def test_access_rule_can_be_turned_off(aiohttp_client, sso_config, provider, conn):
    client = await aiohttp_client(create_app(sso_config(access_claim="")))
    await signs_in(client, provider, plgridAccessServices=None)


async def test_alg_none_is_refused(sso, provider, conn):
    token = unsigned_token({"alg": "none", "typ": "JWT", "kid": "rsa-1"}, provider.claims())
    assert await sign_in(sso, token) == denied(
        "Invalid token: only RS256 and ES256 signatures are accepted"
    )
    assert provider.requests == {}  # refused before any key is looked up


async def test_hs256_signed_with_the_public_key_is_refused(sso, provider, realm_keys, conn):
    """Algorithm confusion: the realm's public key (PEM, or its JWK) used as an HMAC secret."""
    header = {"alg": "HS256", "typ": "JWT", "kid": "rsa-1"}
    for secret in (realm_keys["rsa"].public_pem(), orjson.dumps(realm_keys["rsa"].jwk())):
        token = hmac_token(header, provider.claims(), secret)
        assert await sign_in(sso, token) == denied(
            "Invalid token: only RS256 and ES256 signatures are accepted"
        )
    assert await users_in(conn) == []


async def test_signature_by_another_key_under_the_realms_key_id(sso, provider, realm_keys, conn):
    token = provider.token(realm_keys["impostor"])
    assert await sign_in(sso, token) == denied("Invalid token: bad signature")


async def test_algorithm_must_be_the_keys(sso, provider, realm_keys, conn):
    """An ES256 signature claiming the realm's RSA key id: the key decides the algorithm."""
    forged = SigningKey("rsa-1", "ES256", realm_keys["ec"].private)
    assert await sign_in(sso, provider.token(forged)) == denied(
        "Invalid token: algorithm does not match the signing key"
    )


@pytest.mark.parametrize(
    ("token", "message"),
    [
        ("abc", "Invalid token: not a signed JWT"),
        ("a.b.c", "Invalid token: not a signed JWT"),
        ("x" * 5000, "Invalid token: not a signed JWT"),
        ("e30.e30.", "Invalid token: only RS256 and ES256 signatures are accepted"),  # {}.{}.
        (
            "eyJhbGciOlsiUlMyNTYiXX0.e30.",
            "Invalid token: only RS256 and ES256 signatures are accepted",
        ),
    ],
)
async def test_garbage_tokens(sso, provider, conn, token, message):
    assert await sign_in(sso, token) == denied(message)
    assert provider.requests == {}


async def test_header_without_key_id(sso, provider, realm_keys, conn):
    key = realm_keys["rsa"]
    token = jwt.encode(provider.claims(), key.private, algorithm="RS256")
    assert await sign_in(sso, token) == denied("Invalid token: no key id (kid) in the header")


# --- the realm's keys -------------------------------------------------------------------------


def fetches(provider: OpenIdProvider) -> tuple[int, int]:
    """(openid-configuration requests, JWKS requests) the realm has had."""
    return provider.requests[CONFIG_PATH], provider.requests[JWKS_PATH]


async def past_interval() -> None:
    """Wait until the configured min_refetch_interval has passed since the last fetch."""
    await asyncio.sleep(REFETCH_INTERVAL * 1.2)


async def test_keys_are_fetched_once_and_cached(sso, provider, realm_keys):
    for key_name in ("rsa", "ec", "rsa", "ec"):
        await signs_in(sso, provider, realm_keys[key_name])
    assert fetches(provider) == (1, 1)


async def test_concurrent_first_sign_ins_share_one_fetch(sso, provider):
    expires = int(time.time()) + 300
    results = await asyncio.gather(*(sign_in(sso, provider.token(exp=expires)) for _ in range(8)))
    assert results == [(202, {**WELCOME, "access_exp": expires * 1000})] * 8
    assert fetches(provider) == (1, 1)


async def test_unknown_key_id_refetches_once_then_403(sso, provider, realm_keys):
    await signs_in(sso, provider)
    await past_interval()
    unknown = provider.token(realm_keys["unpublished"])
    for _ in range(3):
        assert await sign_in(sso, unknown) == denied("Invalid token: unknown signing key (kid)")
    # one refetch of the key set (the jwks_uri is kept), then none within the interval
    assert fetches(provider) == (1, 2)


async def test_unknown_key_id_on_a_cold_cache_costs_one_fetch(sso, provider, realm_keys):
    unknown = provider.token(realm_keys["unpublished"])
    for _ in range(2):
        assert await sign_in(sso, unknown) == denied("Invalid token: unknown signing key (kid)")
    assert fetches(provider) == (1, 1)


async def test_key_rotation(sso, provider, realm_keys):
    """A new key is picked up on first sight; a key the realm dropped stops working."""
    await signs_in(sso, provider, realm_keys["rsa"])
    provider.keys = [realm_keys["rsa_next"], realm_keys["ec"]]
    await past_interval()
    await signs_in(sso, provider, realm_keys["rsa_next"])
    assert await sign_in(sso, provider.token(realm_keys["rsa"])) == denied(
        "Invalid token: unknown signing key (kid)"
    )
    assert fetches(provider) == (1, 2)


async def test_keys_expire_after_the_cache_lifetime(aiohttp_client, sso_config, provider, conn):
    client = await aiohttp_client(create_app(sso_config(key_cache_ttl=REFETCH_INTERVAL)))
    await signs_in(client, provider)
    await signs_in(client, provider)
    await past_interval()
    await signs_in(client, provider)
    assert fetches(provider) == (1, 2)


UNAVAILABLE = "Cannot verify the token: the identity provider is unavailable"


def unavailable() -> tuple[int, dict[str, str]]:
    return 503, {"message": UNAVAILABLE}


async def test_provider_down(aiohttp_client, sso_config, provider, unused_tcp_port, conn, caplog):
    down = f"http://127.0.0.1:{unused_tcp_port}{REALM_PATH}"
    client = await aiohttp_client(create_app(sso_config(issuer=down)))
    token = provider.token(iss=down)
    caplog.set_level(logging.DEBUG)
    assert await sign_in(client, token) == unavailable()
    assert await users_in(conn) == []
    assert token not in caplog.text  # the failure is logged, the token never


async def test_provider_slow(aiohttp_client, sso_config, provider, conn):
    """Sign-ins waiting on a stalled realm all end within the timeout, after one attempt; in the
    interval after it, sign-ins are refused at once without asking again."""
    client = await aiohttp_client(create_app(sso_config(timeout=0.5, min_refetch_interval=60)))
    provider.stalled = True
    started = time.monotonic()
    results = await asyncio.gather(*(sign_in(client, provider.token()) for _ in range(4)))
    assert results == [unavailable()] * 4
    assert time.monotonic() - started < 3  # 0.5 s timeout, generous bound for a busy machine
    started = time.monotonic()
    assert await sign_in(client, provider.token()) == unavailable()
    assert time.monotonic() - started < 1
    assert fetches(provider) == (1, 0)


async def test_sign_ins_that_waited_for_an_attempt_share_its_result(
    aiohttp_client, sso_config, provider, conn
):
    """Also with a min_refetch_interval shorter than the timeout: sign-ins that arrived while an
    attempt ran take its result. They queued instead, each starting an attempt of its own once
    the one before ended (the n-th waited n timeouts, and the realm was asked n times)."""
    client = await aiohttp_client(create_app(sso_config(timeout=1.0, min_refetch_interval=0.2)))
    provider.stalled = True
    started = time.monotonic()
    results = await asyncio.gather(*(sign_in(client, provider.token()) for _ in range(5)))
    assert results == [unavailable()] * 5
    assert time.monotonic() - started < 2.5  # one 1 s timeout, generous for a busy machine
    assert fetches(provider) == (1, 0)


@pytest.mark.parametrize("fault", ["down", "stalled", "html 500", "html 200"])
async def test_a_realm_that_fails_is_a_503_to_retry_not_a_refusal(
    aiohttp_client, sso_config, provider, unused_tcp_port, conn, fault
):
    """The fault is the realm's (or the way to it), not the user's: 503 with Retry-After (the
    realm is asked again after min_refetch_interval), as for a database outage. A 403 told the
    UI, and every user of the realm, "Please log in again", and showed as no server error."""
    issuer = f"http://127.0.0.1:{unused_tcp_port}{REALM_PATH}" if fault == "down" else None
    provider.stalled = fault == "stalled"
    provider.html_status = {"html 500": 500, "html 200": 200}.get(fault)
    client = await aiohttp_client(
        create_app(sso_config(timeout=0.5, issuer=issuer or provider.issuer))
    )
    response = await post_token(client, provider.token(iss=issuer or provider.issuer))
    assert (response.status, await response.json()) == unavailable()
    assert response.headers["Retry-After"] == str(math.ceil(REFETCH_INTERVAL))
    assert "access_token" not in response.cookies
    assert await users_in(conn) == []


async def test_the_realm_is_reached_through_the_proxy_the_environment_names(
    aiohttp_client, aiohttp_server, sso_config, provider, conn, monkeypatch
):
    """A server that reaches the world only through a proxy (HTTPS_PROXY, HTTP_PROXY, as curl
    and Python's own clients read them) fetches the realm's keys through it."""
    proxy = HttpProxy()
    proxy_url = str((await aiohttp_server(proxy.app())).make_url("/"))
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", proxy_url)
    client = await aiohttp_client(create_app(sso_config()))
    await signs_in(client, provider)
    assert proxy.forwarded == [provider.base_url() + CONFIG_PATH, provider.base_url() + JWKS_PATH]
    assert await users_in(conn) == [(USERNAME, "keycloak")]


async def test_no_netrc_credentials_are_sent_to_the_realm(
    aiohttp_client, sso_config, provider, conn, monkeypatch, tmp_path
):
    """README: the realm is reached through the proxy the environment names, as curl does;
    nothing else of the environment is followed. The server account's ~/.netrc (credentials
    for a mirror, a `default` entry) must not be sent as Basic auth to the realm, nor to the
    host its jwks_uri names."""
    (tmp_path / ".netrc").write_text("default login deploy password mirror-secret\n")
    (tmp_path / ".netrc").chmod(0o600)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("NETRC", raising=False)
    client = await aiohttp_client(create_app(sso_config()))
    await signs_in(client, provider)
    assert provider.authorizations == [None, None]


async def test_provider_back_after_an_outage(aiohttp_client, sso_config, provider, conn):
    client = await aiohttp_client(create_app(sso_config(timeout=0.5)))
    provider.stalled = True
    assert await sign_in(client, provider.token()) == unavailable()
    provider.stalled = False
    provider.release.set()
    await past_interval()
    await signs_in(client, provider)


@pytest.mark.parametrize(
    ("configuration", "jwks"),
    [
        ({"issuer": "http://elsewhere/realms/plgrid"}, None),  # not our issuer
        ({"jwks_uri": None}, None),
        (None, {"keys": []}),
        (None, {"keys": [{"kty": "oct", "k": "c2VjcmV0", "kid": "rsa-1", "alg": "HS256"}]}),
        (None, ["not", "an", "object"]),
    ],
)
async def test_provider_sends_something_unusable(
    aiohttp_client, sso_config, provider, conn, configuration, jwks
):
    provider.configuration_changes = configuration or {}
    provider.jwks_body = jwks
    client = await aiohttp_client(create_app(sso_config()))
    assert await sign_in(client, provider.token()) == unavailable()


async def post_token(client: TestClient, token: str, username: str = USERNAME):
    return await client.post(
        "/auth/keycloak", json={"username": username}, headers={"Authorization": f"Bearer {token}"}
    )


# --- measurement (opt-in) ---------------------------------------------------------------------


@pytest.mark.skipif(not os.environ.get("YAPTIDE_MEASURE"), reason="set YAPTIDE_MEASURE=1")
@pytest.mark.parametrize("key_name", ["rsa", "ec"])
async def test_measure_warm_sign_in(sso, provider, realm_keys, key_name):
    """Time of POST /auth/keycloak with the realm's keys cached, over real HTTP (printed): wall
    time per request as the client sees it, and CPU time per request of this process (client
    and server both run here; PostgreSQL is another process).

    YAPTIDE_MEASURE=1 .venv/bin/python -m pytest -q -s tests/test_auth_keycloak.py -k measure
    """
    token = provider.token(realm_keys[key_name])
    await signs_in(sso, provider, realm_keys[key_name])  # warms the key cache
    times = []
    cpu_started = time.process_time()
    for _ in range(300):
        started = time.perf_counter()
        status, _ = await sign_in(sso, token)
        times.append(time.perf_counter() - started)
        assert status == 202
    cpu = (time.process_time() - cpu_started) / len(times)
    times.sort()
    assert fetches(provider) == (1, 1)
    p50, p90 = times[len(times) // 2], times[len(times) * 9 // 10]
    print(
        f"\n{key_name}: warm sign-in, {len(times)} requests one after another: p50 {p50 * 1000:.2f} ms,"
        f" p90 {p90 * 1000:.2f} ms, min {times[0] * 1000:.2f} ms; CPU {cpu * 1000:.2f} ms per request"
    )


async def test_token_expired_within_the_leeway_is_not_a_dead_session(sso, provider, conn):
    """A token whose exp passed less than `leeway` (10 s) ago passes the checks; the answer
    must not be 202 "Login successful" with a session that is already over."""
    response = await post_token(sso, provider.token(exp=int(time.time()) - 3))
    body = await response.json()
    if response.status == 202:
        status = await sso.get("/auth/status")
        assert status.status == 200, (
            body,
            response.headers.getall("Set-Cookie"),
            await status.json(),
        )
    assert (response.status, body) == (403, {"message": "Invalid token: expired"})


@pytest.mark.parametrize(
    "jwks",
    [
        {"keys": [{"kty": "RSA", "kid": "rsa-1", "alg": ["RS256"], "n": "AQAB", "e": "AQAB"}]},
        {"keys": [{"kty": "RSA", "kid": "rsa-1", "alg": {"RS256": 1}, "n": "AQAB", "e": "AQAB"}]},
    ],
)
async def test_provider_sends_a_key_with_an_alg_that_is_not_a_string(
    aiohttp_client, sso_config, provider, conn, jwks
):
    provider.jwks_body = jwks
    client = await aiohttp_client(create_app(sso_config()))
    assert await sign_in(client, provider.token()) == unavailable()


@pytest.mark.parametrize(
    ("claims", "kept"),
    [
        ({"name": "Alice\0Example"}, {"display_name": None}),
        ({"email": "alice\0@example.org"}, {"email": None}),
    ],
)
async def test_profile_claims_with_nul_are_left_out(sso, provider, conn, claims, kept):
    await signs_in(sso, provider, **claims)
    assert await status_of(sso) == (200, {**SSO_STATUS, **kept})


@pytest.mark.parametrize(
    ("claims", "kept"),
    [
        ({"name": "Alice \ud83d Example"}, {"display_name": None}),
        ({"email": "alice\udc00@example.org"}, {"email": None}),
    ],
)
async def test_profile_claims_with_a_lone_surrogate_are_left_out(sso, provider, conn, claims, kept):
    """JSON's `\\ud83d` (half an emoji) reaches Python as a lone surrogate, which PostgreSQL
    cannot store (POST /user/update refuses it as malformed JSON); the sign-in was a 500."""
    await signs_in(sso, provider, **claims)
    response = await sso.post("/user/update", data=b'{"display_name": "\\ud83d"}')
    assert (response.status, await response.json()) == (400, {"message": "Malformed JSON body"})
    assert await status_of(sso) == (200, {**SSO_STATUS, **kept})


async def test_token_that_is_not_utf8_is_refused(sso) -> None:
    """Authorization header bytes that are not UTF-8 are a token that fails its checks (403)."""
    body = b'{"username": "alice"}'
    reader, writer = await asyncio.open_connection(sso.host, sso.port)
    writer.write(
        b"POST /auth/keycloak HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer a\xffb.c.d\r\n"
        b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    )
    answer = await asyncio.wait_for(reader.read(1000), 10)
    writer.close()
    assert answer.startswith(b"HTTP/1.1 403 "), answer


def large_key_sets(realm_keys: dict[str, SigningKey]) -> dict[str, tuple[bytes, str | None]]:
    """Key sets larger than any realm's (Keycloak's are a few KB), as bytes and encoding: the
    realm's keys padded to 8 MiB; 32 MiB of the same once inflated, sent as 32 KiB of gzip;
    20,000 keys (3.4 MB), each of which PyJWT would parse."""
    keys = [realm_keys["rsa"].jwk(), realm_keys["ec"].jwk()]
    padded = orjson.dumps({"keys": keys, "padding": " " * (8 << 20)})
    inflated = b'{"keys": %s, "padding": "%s"}' % (orjson.dumps(keys), b" " * (32 << 20))
    many = [{**realm_keys["ec"].jwk(), "kid": f"ec-{n}"} for n in range(20_000)]
    return {
        "padded": (padded, None),
        "gzip": (gzip.compress(inflated, 9), "gzip"),
        "many keys": (orjson.dumps({"keys": keys + many}), None),
    }


@pytest.mark.parametrize("kind", ["padded", "gzip", "many keys"])
async def test_a_key_set_too_large_is_refused_without_being_held(
    aiohttp_client, sso_config, provider, realm_keys, conn, kind
):
    """A realm's answer is read up to a bound (once inflated), never whole: 256 KiB of gzip
    took 3.5 GiB, and 20,000 keys held the event loop (every request) for 0.4 s, again at each
    refetch an unknown key id may cause."""
    provider.jwks_bytes = large_key_sets(realm_keys)[kind]
    client = await aiohttp_client(create_app(sso_config(timeout=60)))
    token = provider.token()
    tracemalloc.start()
    try:
        answer = await sign_in(client, token)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20, f"{peak / 2**20:.0f} MiB held for a realm's answer"
    assert answer == unavailable()


# --- sessions of SSO sign-ins ---------------------------------------------------------------


@pytest.mark.parametrize("sub", ["abc\0def", "abc\ud83ddef"], ids=["nul", "lone-surrogate"])
async def test_a_sub_that_cannot_be_stored_is_refused_not_a_500(sso, provider, conn, sub):
    """The sub is bound to the account (migration 0018) as text: a NUL, or half a surrogate pair
    (JSON's `\\ud83d`), made the sign-in a 500 (the name and email claims are checked for just
    this by storable; the username by validate_username). README: every failed check is a 403
    naming it."""
    response = await post_token(sso, provider.token(sub=sub))
    assert (response.status, await response.json()) == (
        403,
        {"message": "Invalid token: the sub claim holds a NUL or half a surrogate pair"},
    )
    assert await conn.fetchval("SELECT count(*) FROM users") == 0


async def test_sign_out_ends_the_sessions_of_the_browsers_earlier_sign_ins(sso, provider, conn):
    """The UI signs in again with a fresh token every few minutes, each time beginning a new
    session; signing out ends only the last one. A copy of the access cookie taken before the
    last re-sign-in goes on working after sign-out until its Keycloak token expires (up to
    access_ttl), which is what the sign-out's session was meant to stop ("a copy of the access
    cookie stops working at once")."""
    expires = int(time.time()) + 300
    response = await post_token(sso, provider.token(exp=expires))
    assert (response.status, await response.json()) == (
        202,
        {**WELCOME, "access_exp": expires * 1000},
    )
    copied = access_cookie(sso)  # a copy of the cookie, taken now
    later = expires + 120
    response = await post_token(sso, provider.token(exp=later))  # the UI's timer, same browser
    assert (response.status, await response.json()) == (
        202,
        {**WELCOME, "access_exp": later * 1000},
    )
    response = await sso.delete("/auth/keycloak")  # the user signs out
    assert (response.status, await response.json()) == (200, {"message": "Logout successful"})
    assert await status_of_cookie(sso, copied) == (401, {"message": "Invalid or expired token"})
    live = await conn.fetchval(
        "SELECT count(*) FROM refresh_tokens WHERE revoked_at IS NULL AND expires_at > now()"
    )
    assert live == 0


async def test_a_local_login_ends_the_sso_session_whose_cookie_it_replaces(sso, provider, conn):
    """The same browser: an SSO user, then a local login (another account). The login's answer
    replaces the SSO access cookie, so the browser can no longer sign that session out; a copy
    of it goes on working until the Keycloak token expires, even after the logout. (The reverse,
    an SSO sign-in over a local session, ends the local one: sessions.end's rule that a response
    that drops a cookie must end its session.)"""
    response = await post_token(sso, provider.token())
    assert response.status == 202
    copied = access_cookie(sso)
    await login(sso, "bob")
    response = await sso.delete("/auth/logout")
    assert (response.status, await response.json()) == (200, {"message": "Logout successful"})
    assert await status_of_cookie(sso, copied) == (401, {"message": "Invalid or expired token"})


async def test_an_sso_session_is_stored_no_longer_than_its_access_cookie_lasts(sso, provider, conn):
    """No refresh token, so nothing can use the session once its access token (at most
    access_ttl, 900 s) has expired; yet the row stays live until the Keycloak token's exp, counted
    in MAX_SESSIONS and read with the user at every access check ("they must not grow with how
    often a client logs in"). With a 2-hour Keycloak token and the UI signing in again before
    each access_exp, the rows of dead sessions pile up."""
    before = math.ceil(time.time() + 900)
    response = await post_token(sso, provider.token(exp=int(time.time()) + 7200))
    after = math.ceil(time.time() + 900)
    body = await response.json()
    assert response.status == 202 and before * 1000 <= body["access_exp"] <= after * 1000
    stored = await conn.fetchval("SELECT extract(epoch FROM expires_at) FROM refresh_tokens")
    assert float(stored) <= body["access_exp"] / 1000


async def test_a_keycloak_exp_beyond_year_9999_is_not_a_500(sso, provider, conn):
    """The session's end is the token's exp as a Python datetime, which stops at year 9999: a
    token with a later exp (a realm's misconfigured lifetime) passes every check and then the
    sign-in is a 500. Its access cookie would have lasted access_ttl anyway."""
    before = math.ceil(time.time() + 900)
    response = await post_token(sso, provider.token(exp=253402300800))  # 10000-01-01
    after = math.ceil(time.time() + 900)
    body = await response.json()
    assert response.status == 202, body
    assert body == {**WELCOME, "access_exp": body["access_exp"]}
    assert before * 1000 <= body["access_exp"] <= after * 1000
