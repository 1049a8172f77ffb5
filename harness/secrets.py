"""Keep database passwords out of everything the harness writes or prints.

A storage URL such as ``postgresql://user:pw@host/db`` is masked to
``postgresql://user:***@host/db`` wherever it is stored or shown: reports, manifest.json,
benchmark.json, the study's ``config`` attribute, logs, errors and Hydra's saved
``.hydra/*.yaml``. Rather than on the command line, the password can come from

- ``VAE_SWEEP_DB_PASSWORD`` (used when the URL names a user but no password), or
- libpq's own ``PGPASSWORD`` or ``~/.pgpass`` / ``PGPASSFILE`` (PostgreSQL only; psycopg2
  reads them itself when the URL has no password).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

PASSWORD_ENV = "VAE_SWEEP_DB_PASSWORD"
# Masked URL -> real URL, for the URLs whose password `hide_argv_secrets` took off the
# command line (JSON; inherited by spawned workers, never written anywhere).
SECRET_URLS_ENV = "VAE_SWEEP_SECRET_URLS"
MASK = "***"
# scheme://user:password@ : the password ends at the last "@" before the host part.
_URL_PASSWORD = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.\-]*://[^:/@\s'\"]*:)[^\s'\"/]*@")
# ?password=X / &password=X (any position of the query; also passwd, pwd, pass, secrets and
# tokens), in a URL or a libpq-style string; the value ends at the next & ; # quote or space.
_QUERY_PASSWORD = re.compile(
    r"(?P<head>[?&;](?:password|passwd|pwd|pass|secret|token|api_key|access_token)=)"
    r"(?P<value>[^&;#\s'\"\],}]*)",
    re.IGNORECASE,
)
_URL = re.compile(r"\b[A-Za-z][A-Za-z0-9+.\-]*://[^\s'\",\]}]+")


def mask_text(text: str) -> str:
    """``text`` with the password of every URL in it replaced by ``***``.

    Covers ``scheme://user:pw@host`` and the query forms ``?password=pw`` / ``&password=pw``.
    """
    text = _URL_PASSWORD.sub(lambda m: f"{m['head']}{MASK}@", text)
    return _QUERY_PASSWORD.sub(
        lambda m: m[0] if not m["value"] or m["value"].startswith(MASK) else f"{m['head']}{MASK}",
        text,
    )


def hide_argv_secrets(argv: list[str]) -> list[str]:
    """``argv`` with every URL password masked; the real URLs go to `SECRET_URLS_ENV`.

    Console scripts call this before Hydra starts, so Hydra never sees a password: its
    overrides.yaml, run log, console lines and "Error executing job with overrides" line all
    carry the masked URL. `reveal` turns a masked URL back into the real one where a
    connection is made (storage, MLflow).
    """
    known = _secret_urls()
    out = []
    for arg in argv:

        def swap(match: re.Match[str]) -> str:
            url = match[0]
            masked = mask_text(url)
            if masked != url:
                known[masked] = url
            return masked

        out.append(_URL.sub(swap, arg))
    if known:
        import json

        os.environ[SECRET_URLS_ENV] = json.dumps(known)
    return out


def _secret_urls() -> dict[str, str]:
    import json

    try:
        found = json.loads(os.environ.get(SECRET_URLS_ENV) or "{}")
    except ValueError:
        return {}
    return found if isinstance(found, dict) else {}


def reveal(url: str) -> str:
    """The real URL behind a URL masked by `hide_argv_secrets` (else ``url`` unchanged).

    The result holds the secret: use it to connect, never to store or print.
    """
    if MASK not in url:
        return url
    known = _secret_urls()
    if url in known:
        return known[url]
    for masked, real in sorted(known.items(), key=lambda kv: -len(kv[0])):
        if masked in url:
            url = url.replace(masked, real)
    return url


def mask(value: Any) -> Any:
    """A copy of ``value`` (nested dicts/lists/strings) with every URL password masked."""
    if isinstance(value, str):
        return mask_text(value)
    if isinstance(value, Mapping):
        return {k: mask(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(mask(v) for v in value)
    return value


def with_env_password(url: str) -> str:
    """``url`` with the password from ``VAE_SWEEP_DB_PASSWORD`` if it names a user but none.

    URLs that carry a password, have no user, or are file storages are returned unchanged.
    The result holds the secret: use it to connect, never to store or print.
    """
    url = reveal(url)
    password = os.environ.get(PASSWORD_ENV)
    if not password or "://" not in url or url.startswith(("sqlite", "journal")):
        return url
    try:
        from sqlalchemy.engine import make_url

        parsed = make_url(url)
    except Exception:  # not a URL SQLAlchemy can read: it will fail with its own message
        return url
    if parsed.username is None or parsed.password is not None:
        return url
    return parsed.set(password=password).render_as_string(hide_password=False)
