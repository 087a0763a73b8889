"""Who may use the dashboard, and which POSTs it believes.

Bound to loopback, it trusts the host's users, as ``pprunner scale`` does.
Bound anywhere else it needs a token (``--token`` or ``PPRUNNER_WEB_TOKEN``)
or refuses to start: anyone who can reach it could otherwise retry, purge
and scale. A browser gives the token once, as ``?token=...``, and keeps it in
an HttpOnly, SameSite=Strict cookie; a script sends ``Authorization: Bearer
...``; a browser's own login prompt (Basic, any user name, the token as the
password) works too.

Without a token it answers only requests whose ``Host`` is a loopback name or
address: another site's page cannot reach it by pointing a name of its own
at 127.0.0.1 (DNS rebinding) and reading it as its own.

A POST must carry the form field ``csrf``, a secret drawn at start and only
found in the dashboard's own pages, which another site's page cannot read;
an ``Origin`` that is not the dashboard's is refused as well.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import ipaddress
import os
import secrets
import urllib.parse

from pprunner.config import MIN_KEY_LENGTH
from pprunner.errors import ConfigError

#: the environment variable that gives the token when ``--token`` does not
TOKEN_VARIABLE = "PPRUNNER_WEB_TOKEN"
#: the cookie a browser keeps the token in after ``?token=...``
COOKIE = "pprunner_web_token"
#: the form field every POST carries
CSRF_FIELD = "csrf"
#: how a token is made, for the messages that ask for one
TOKEN_RECIPE = "python -c 'import secrets; print(secrets.token_urlsafe(32))'"


def is_loopback(host: str) -> bool:
    """Whether ``host`` is reachable only from this machine. A name other than
    ``localhost`` may resolve to anything, so it counts as beyond loopback."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def loopback_host(host_header: str) -> bool:
    """Whether a request's ``Host`` (``name:port``, ``[::1]:port``) names loopback."""
    hostname = urllib.parse.urlsplit(f"//{host_header}").hostname
    return hostname is not None and is_loopback(hostname)


def required_token(host: str, given: str | None) -> str | None:
    """The token the dashboard on ``host`` will ask for (``given``, else the
    environment's), or a ConfigError when it listens beyond loopback without one
    or the token is too short to stand guessing."""
    token = given if given is not None else os.environ.get(TOKEN_VARIABLE) or None
    if token is None:
        if is_loopback(host):
            return None
        raise ConfigError(f"pprunner web --host {host} listens beyond loopback, where anyone "
                          f"who reaches it could retry, purge and scale: give --token or set "
                          f"{TOKEN_VARIABLE} (make one with {TOKEN_RECIPE}), or leave --host "
                          f"at 127.0.0.1")
    if len(token) < MIN_KEY_LENGTH:
        raise ConfigError(f"the dashboard's token is {len(token)} characters long; use at "
                          f"least {MIN_KEY_LENGTH} (make one with {TOKEN_RECIPE})")
    return token


def presented_token(headers: dict[str, str], cookies: dict[str, str]) -> str | None:
    """The token a request carries: a Bearer or Basic Authorization header, or the cookie."""
    scheme, _, value = headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer":
        return value.strip()
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return None
        return decoded.partition(":")[2]
    return cookies.get(COOKIE)


def matches(presented: str | None, token: str) -> bool:
    """Compared in constant time: how long a wrong guess takes tells nothing."""
    return presented is not None and hmac.compare_digest(presented.encode(), token.encode())


def new_csrf_secret() -> str:
    return secrets.token_urlsafe(32)


def same_origin(origin: str | None, host: str | None) -> bool:
    """A POST's ``Origin`` (absent from some clients: then the CSRF field decides)
    names the dashboard's own ``Host``."""
    if not origin:
        return True
    return urllib.parse.urlsplit(origin).netloc == host
