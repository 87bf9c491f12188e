"""Checks of single configuration values: each returns what is wrong, or None."""

import dataclasses
import re
import shlex
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from server.runner.slurm.batch_options import ALLOWED, option_names


def positive(value: int | float) -> str | None:
    return None if value > 0 else "must be greater than 0"


_CENTURY = 100 * 365.25 * 24 * 3600.0


def _at_most_a_century(value: float) -> str | None:
    return None if value <= _CENTURY else "must be at most 100 years"


def non_negative(value: int | float) -> str | None:
    return None if value >= 0 else "must be 0 or more"


def seconds(value: float) -> str | None:
    """A time in seconds, more than 0, of at most 100 years: more overflows the timers it
    sets, and a date it gives (a token's end) must be one the server can write."""
    return positive(value) or _at_most_a_century(value)


def seconds_or_zero(value: float) -> str | None:
    """A time in seconds, 0 or more (0: no limit), of at most 100 years (a date it gives, how
    long something is kept after a date, must be one PostgreSQL can write)."""
    return non_negative(value) or _at_most_a_century(value)


# SHIELD-HIT12A numbers a task's result files with four digits (`dose_0001.bdo`), which the
# merge strips to group them by detector: a fifth digit would make a detector of its own.
MAX_NTASKS = 9999


def ntasks(value: int) -> str | None:
    ok = 1 <= value <= MAX_NTASKS
    return None if ok else f"must be between 1 and {MAX_NTASKS} (result files carry 4 digits)"


def port(value: int) -> str | None:
    return None if 1 <= value <= 65535 else "must be between 1 and 65535"


def not_empty(value: str) -> str | None:
    return None if value.strip() else "must not be empty"


def one_of(*choices: str) -> Callable[[str], str | None]:
    def check(value: str) -> str | None:
        return None if value in choices else f"must be one of: {', '.join(choices)}"

    return check


def database_url(value: str) -> str | None:
    if value and not value.startswith(("postgres://", "postgresql://")):
        return "must be a postgresql:// URL (or empty for the embedded server)"
    return None


def _usable(value: str) -> bool:
    """An http:// or https:// URL with a host, a port in range and no white space."""
    try:
        parts = urlsplit(value)
        usable = parts.scheme in ("http", "https") and bool(parts.hostname) and parts.port != 0
    except ValueError:  # a port out of range, a broken IPv6 address
        usable = False
    return usable and not any(char.isspace() for char in value)


def http_url(value: str) -> str | None:
    """A base URL that paths are added to (the Keycloak issuer's discovery document)."""
    if value and not _usable(value):
        return "must be an http:// or https:// URL with a host (or empty)"
    if "?" in value or "#" in value:
        return "must not have a query or a fragment: paths are added to it"
    return None


CREDENTIALS_IN_URL = "must not hold a user name or password (workers send their update key)"


def listen_host(value: str) -> str | None:
    """server.host: empty would listen on every interface, not on none or the default."""
    return None if value else "must not be empty (0.0.0.0 for every interface)"


def worker_url(value: str) -> str | None:
    """The server's URL as workers are given it (YAPTIDE_URL): what the worker accepts."""
    if value and not _usable(value):
        return (
            "must be an http:// or https:// URL with a host, as workers need it for YAPTIDE_URL "
            "(or empty)"
        )
    if "?" in value or "#" in value:  # the worker appends /tasks, /results, ... to it
        return "must not have a query or a fragment: the worker adds the endpoints' paths to it"
    return CREDENTIALS_IN_URL if has_credentials(value) else None


def has_credentials(value: str) -> bool:
    """Whether a URL holds a user name or password (`https://user:pass@host/`)."""
    try:
        parts = urlsplit(value)
    except ValueError:  # a broken IPv6 address: its authority read as urlsplit would
        authority = re.split(r"[/?#]", value.partition("//")[2], maxsplit=1)[0]
        return "@" in authority
    return parts.username is not None or parts.password is not None


def text(value: str) -> str | None:
    """Every string setting: no NUL (no path, command or name holds one), and UTF-8 (bytes of
    an environment variable that are not arrive as lone surrogates, which nothing can encode:
    a secret that would sign no token, a path no file has)."""
    if "\0" in value:
        return "must not contain NUL characters"
    try:
        value.encode()
    except UnicodeEncodeError:
        return "must be UTF-8 text"
    return None


def command(value: str) -> str | None:
    try:
        words = shlex.split(value)
    except ValueError as exc:
        return f"cannot be split like a shell command line ({exc})"
    if value and not words:
        return 'is blank: a command, or "" for the default'
    return None


_SBATCH_WORD = re.compile(r"^[A-Za-z0-9_.,:@%+=/-]*$")
_SLURM_TIME = re.compile(r"^([0-9]+-)?[0-9]+(:[0-9]{1,2}){0,2}$")
_REMOTE_PATH = re.compile(r"^(/[A-Za-z0-9_.@%+=-]+)*/?$")


def sbatch_word(value: str) -> str | None:
    """A value written into an #SBATCH line: no spaces, quotes or shell characters."""
    return (
        None if _SBATCH_WORD.match(value) else "must be one word of letters, digits and _.,:@%+=/-"
    )


def batch_option_names(value: str) -> str | None:
    """Names of options of the batch_options whitelist (others are refused to users anyway)."""
    for name in option_names(value):
        if name not in ALLOWED:
            return f"--{name} is not an option users may set anyway (README: the batch_options whitelist)"
    return None


def slurm_time(value: str) -> str | None:
    ok = not value or _SLURM_TIME.match(value)
    return None if ok else "must be a SLURM time limit (minutes, MM:SS, HH:MM:SS or D-HH:MM:SS)"


def sbatch_lines(value: str) -> str | None:
    for line in value.splitlines():
        if line.strip() and not line.startswith("#SBATCH "):
            return "every line must start with '#SBATCH '"
    return None


def remote_path(value: str) -> str | None:
    """A directory written into batch scripts and command lines unquoted by SLURM."""
    ok = _REMOTE_PATH.match(value)
    return None if ok else "must be an absolute path of letters, digits and _.@%+=/- (no spaces)"


MIN_SECRET = 32  # characters of a token signing secret (auth.secret, <data_dir>/secret_key)


def secret(value: str) -> str | None:
    if value and len(value) < MIN_SECRET:
        return f"must be at least {MIN_SECRET} characters (or empty to generate one)"
    return None


def url_prefix(value: str) -> str | None:
    """A path prefix like `/ui`: one or more plain segments, no trailing slash."""
    if re.fullmatch(r"(/[A-Za-z0-9._~-]+)+", value) and "/." not in value:
        return None
    return "must be a path like /ui (segments of letters, digits, '.', '_', '~', '-')"


def origin_list(value: str) -> list[str]:
    """The origins of a comma- or space-separated list."""
    return [item for item in re.split(r"[\s,]+", value) if item]


def origins(value: str) -> str | None:
    """Origins as browsers send them (they are compared as text, so another spelling of the
    same origin would never match)."""
    for origin in origin_list(value):
        if not re.fullmatch(
            r"https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?|https?://\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?",
            origin,
        ):
            return (
                f"{origin!r} is not an origin like https://ui.example.org or http://localhost:3000"
            )
        sent = as_browsers_send(origin)
        if sent != origin:
            return f"browsers send {origin!r} as {sent!r}: write it that way"
    return None


def as_browsers_send(origin: str) -> str:
    """An origin serialised as in the `Origin` header: lower case, no default port."""
    origin = origin.lower()
    default = ":443" if origin.startswith("https:") else ":80"
    return origin.removesuffix(default)


def checked(default: Any, validator: Callable[[Any], str | None], secret: bool = False) -> Any:
    """A dataclass field with its validator, and whether error messages must not echo it."""
    return dataclasses.field(default=default, metadata={"check": validator, "secret": secret})
