"""Verified, atomic downloads into the dataset cache.

Two ways to get a file into the cache:

* :func:`download_verified` streams a URL into a temporary file next to the destination,
  checks size and sha256, and only then renames it into place, so the cache never holds a
  half-written or unverified file.
* :func:`fetch_recbole_ml100k` obtains the MovieLens-100K ratings from the PyPI wheel
  ``recbole==1.2.1`` (which ships them as an example dataset) for machines that reach a
  package index but no web site. The wheel is opened as a zip; recbole is never imported.
"""

from __future__ import annotations

import hashlib
import logging
import os
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

from tqdm.auto import tqdm

from harness.errors import UserError

log = logging.getLogger(__name__)

#: Socket timeout in seconds. Short on purpose: with no network the attempt must fail fast so
#: the offline fallback (if any) takes over quickly.
DEFAULT_TIMEOUT = 10.0
_CHUNK = 1 << 20

RECBOLE_REQUIREMENT = "recbole==1.2.1"
RECBOLE_WHEEL = "recbole-1.2.1-py3-none-any.whl"
RECBOLE_WHEEL_SHA256 = "9c9948202011f37eb0a7c6768129313f00d6403ad221ec940d5e2d5d5f33a407"
RECBOLE_ML100K_MEMBER = "recbole/dataset_example/ml-100k/ml-100k.inter"
RECBOLE_ML100K_SHA256 = "4edb74e2a81178c2ba9ff381495f754f996c4aea351b1272ca36b43da0935eff"


class DownloadError(UserError, RuntimeError):
    """The remote file could not be fetched (network, HTTP or pip failure)."""


class ChecksumError(UserError, RuntimeError):
    """A fetched file's size or sha256 differs from the expected value."""


def sha256_file(path: Path) -> str:
    """Return the hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def _checksum_message(what: str, expected: object, got: object, fix: str) -> str:
    return f"{what}: expected {expected}, got {got}. Nothing was written to the cache. {fix}"


def download_verified(
    url: str,
    dest: Path,
    *,
    sha256: str,
    size: int | None = None,
    progress: bool = True,
    timeout: float = DEFAULT_TIMEOUT,
) -> Path:
    """Download ``url`` to ``dest`` unless it is already there, verifying size and sha256.

    The body is streamed into a temporary file in ``dest``'s directory (same file system, so
    the final :func:`os.replace` is atomic) and hashed on the fly. On any failure the
    temporary file is removed, so an interrupted or corrupt download leaves no trace.

    Args:
        url: Address to fetch (``http(s)://`` or ``file://``).
        dest: Final path in the cache. If it exists it is trusted without re-hashing: only
            verified files are ever renamed into place.
        sha256: Expected hex sha256 of the body.
        size: Expected size in bytes, or None to skip the size check.
        progress: Show a tqdm progress bar.
        timeout: Socket timeout in seconds (connect and each read).

    Returns:
        ``dest``.

    Raises:
        DownloadError: Network or HTTP error (the message names the URL and the fix).
        ChecksumError: Size or sha256 mismatch (the message names the file, expected and
            received values, and the fix).
    """
    if dest.exists():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        digest = hashlib.sha256()
        received = 0
        try:
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:
                total = resp.headers.get("Content-Length")
                bar = tqdm(
                    total=int(total) if total else size,
                    desc=f"download {dest.name}",
                    unit="B",
                    unit_scale=True,
                    disable=None if progress else True,  # None: no bar in a log file
                )
                with bar:
                    for block in iter(lambda: resp.read(_CHUNK), b""):
                        out.write(block)
                        digest.update(block)
                        received += len(block)
                        bar.update(len(block))
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            raise DownloadError(
                f"Could not download {url}: {exc}. Fix: check the network connection and the "
                f"base_url option, or place a verified copy of the file at {dest}."
            ) from exc
        fix = (
            f"Fix: check that base_url serves the official file (url: {url}); delete any "
            "local copy and download again."
        )
        if size is not None and received != size:
            raise ChecksumError(_checksum_message(f"Size of {dest.name}", size, received, fix))
        got = digest.hexdigest()
        if got != sha256.lower():
            raise ChecksumError(_checksum_message(f"sha256 of {dest.name}", sha256, got, fix))
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; a cache may be shared by several users
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    log.info("downloaded %s -> %s (%d bytes, sha256 ok)", url, dest, received)
    return dest


def _atomic_write(dest: Path, data: bytes) -> None:
    """Write ``data`` to ``dest`` via a temporary sibling and :func:`os.replace`."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.chmod(tmp_name, 0o644)  # mkstemp makes 0600; a cache may be shared by several users
        os.replace(tmp_name, dest)
    finally:
        Path(tmp_name).unlink(missing_ok=True)


def fetch_recbole_ml100k(dest: Path, *, progress: bool = True, timeout: float = 300.0) -> Path:
    """Put the verified MovieLens-100K ``.inter`` file from the recbole wheel at ``dest``.

    Runs ``python -m pip download --no-deps recbole==1.2.1`` (the interpreter running this
    code) into a temporary directory, checks the wheel's sha256, reads the member
    ``recbole/dataset_example/ml-100k/ml-100k.inter`` from it as a zip, checks the member's
    sha256 and writes it atomically. The wheel itself is not kept.

    Args:
        dest: Final path of the ``.inter`` file. If it exists it is returned as is.
        progress: When False pip runs with ``--quiet``; its output is captured either way
            and shown only in the error message if it fails.
        timeout: Seconds pip may take before it is abandoned.

    Returns:
        ``dest``.

    Raises:
        DownloadError: pip failed or produced no wheel (message includes pip's output).
        ChecksumError: Wheel or member sha256 mismatch.
    """
    if dest.exists():
        return dest
    with tempfile.TemporaryDirectory(prefix="vae-sweep-recbole-") as tmp:
        cmd = [
            sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
            "--disable-pip-version-check", RECBOLE_REQUIREMENT, "-d", tmp,
        ]  # fmt: skip
        if not progress:
            cmd.append("--quiet")
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise DownloadError(
                f"`{' '.join(cmd)}` failed: {exc}. Fix: make a package index reachable (pip "
                "config / PIP_INDEX_URL) or download ml-100k.zip from GroupLens into the cache."
            ) from exc
        wheel = Path(tmp) / RECBOLE_WHEEL
        if done.returncode != 0 or not wheel.exists():
            raise DownloadError(
                f"`{' '.join(cmd)}` exited with {done.returncode} and produced no "
                f"{RECBOLE_WHEEL}; pip said:\n{(done.stdout + done.stderr)[-2000:]}\n"
                "Fix: make a package index reachable (pip config / PIP_INDEX_URL) or download "
                "ml-100k.zip from GroupLens into the cache."
            )
        got = sha256_file(wheel)
        if got != RECBOLE_WHEEL_SHA256:
            raise ChecksumError(
                _checksum_message(
                    f"sha256 of {RECBOLE_WHEEL}",
                    RECBOLE_WHEEL_SHA256,
                    got,
                    "Fix: your package index serves a different file; point pip at PyPI.",
                )
            )
        with zipfile.ZipFile(wheel) as zf:
            data = zf.read(RECBOLE_ML100K_MEMBER)
    got = hashlib.sha256(data).hexdigest()
    if got != RECBOLE_ML100K_SHA256:
        raise ChecksumError(
            _checksum_message(
                f"sha256 of {RECBOLE_ML100K_MEMBER}",
                RECBOLE_ML100K_SHA256,
                got,
                "Fix: the wheel's example data changed; download ml-100k.zip from GroupLens.",
            )
        )
    _atomic_write(dest, data)
    log.info("extracted %s from %s -> %s", RECBOLE_ML100K_MEMBER, RECBOLE_WHEEL, dest)
    return dest
