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
from pathlib import Path
from typing import Any

PASSWORD_ENV = "VAE_SWEEP_DB_PASSWORD"
MASK = "***"
# scheme://user:password@ : the password ends at the last "@" before the host part.
_URL_PASSWORD = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.\-]*://[^:/@\s'\"]*:)[^\s'\"/]*@")


def mask_text(text: str) -> str:
    """``text`` with the password of every URL in it replaced by ``***``."""
    return _URL_PASSWORD.sub(lambda m: f"{m['head']}{MASK}@", text)


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


def scrub_hydra_output() -> list[Path]:
    """Mask passwords in the ``.hydra/*.yaml`` Hydra saved for the running job.

    Hydra writes config.yaml, hydra.yaml and overrides.yaml before the task function starts;
    each entry point calls this first thing, so the files hold no secret once work begins.

    Returns:
        The files rewritten.
    """
    try:
        from hydra.core.hydra_config import HydraConfig

        hydra_cfg = HydraConfig.get()
        subdir = hydra_cfg.output_subdir
        folder = Path(hydra_cfg.runtime.output_dir) / subdir if subdir else None
    except Exception:  # not running under Hydra (a library call): nothing was saved
        return []
    if folder is None or not folder.is_dir():
        return []
    from harness.outputs import write_text

    changed = []
    for path in sorted(folder.glob("*.yaml")):
        text = path.read_text()
        masked = mask_text(text)
        if masked != text:
            write_text(path, masked)
            changed.append(path)
    return changed
