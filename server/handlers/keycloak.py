"""`POST /auth/keycloak` (sign in with a Keycloak access token) and `DELETE /auth/keycloak`.

Both answer 403 "Service is not available" unless `[keycloak] issuer` is configured. A sign-in
makes an access cookie like `POST /auth/login`, for the Keycloak user of the token's
`preferred_username` (never a local account of the same name; bound to the realm's user, `sub`,
that first signed in to it), that expires no later than the Keycloak token: the web UI signs in
again with a fresh token before then. No refresh cookie is issued, so a session cannot outlive
what Keycloak granted; signing out ends it at once (server/accounts/sessions.py).
"""

import math
import time

from aiohttp import web

from server.accounts import auth, sessions
from server.accounts.profile import MAX_DISPLAY_NAME, MAX_EMAIL
from server.errors import Forbidden, Unauthorized
from server.http import json_response
from server.keys import CONFIG, KEYCLOAK, POOL
from server.parsing import bearer_token, field, read_public_json
from server.sso.keycloak import SsoIdentity, TokenVerifier, storable
from server.store import users

NOT_AVAILABLE = "Service is not available"
ANOTHER_REALM_USER = (
    "This username's account belongs to another Keycloak user (a different sub): ask the operator"
)


def _verifier(request: web.Request) -> TokenVerifier:
    verifier = request.app.get(KEYCLOAK)
    if verifier is None:
        raise Forbidden(NOT_AVAILABLE)
    return verifier


def _profile(identity: SsoIdentity) -> tuple[str | None, str | None]:
    """The token's name and email for a new account, each dropped unless POST /user/update
    would accept it."""
    name, email = identity.display_name, identity.email
    if name is not None and (len(name) > MAX_DISPLAY_NAME or not storable(name)):
        name = None
    if email is not None and (len(email) > MAX_EMAIL or "@" not in email or not storable(email)):
        email = None
    return name, email


async def sign_in(request: web.Request) -> web.Response:
    verifier = _verifier(request)
    token = bearer_token(request)
    if token is None:
        raise Unauthorized(auth.NO_TOKEN)
    config = request.app[CONFIG]
    username = field(await read_public_json(request), "username", str)
    identity = await verifier.verify(token)
    if identity.username != username:
        raise Forbidden("Username does not match the token's preferred_username")
    if identity.expires <= time.time():  # passed the checks within the leeway: no session left
        raise Forbidden("Invalid token: expired")
    account = await users.sign_in_sso(
        request.app[POOL], identity.username, identity.realm_user, _profile(identity)
    )
    if account is None:
        raise Forbidden(ANOTHER_REALM_USER)
    user_id, generation = account
    # The session lasts as long as its access cookie: the Keycloak token's, at most access_ttl.
    not_after = min(identity.expires, math.ceil(time.time() + config.auth.access_ttl))
    session = await sessions.begin_sso(request, user_id, generation, not_after)
    access, expires = auth.make_access_token(request.app, user_id, generation, not_after, session)
    response = json_response(
        {"message": "Login successful", "access_exp": auth.expiry_ms(expires)}, status=202
    )
    auth.set_cookie(response, config, auth.ACCESS_COOKIE, access, expires - time.time())
    # A refresh cookie left by a local sign-in must not bring that user back after this one.
    await sessions.end(request, auth.REFRESH_COOKIE)
    auth.clear_cookie(response, config, auth.REFRESH_COOKIE)
    return response


async def sign_out(request: web.Request) -> web.Response:
    """`DELETE /auth/logout` under another name: the sessions of the cookies it clears end, a
    local session's too (the browser loses its only handle on it)."""
    _verifier(request)
    return await sessions.logged_out(request)
