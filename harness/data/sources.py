"""Raw interaction sources: MovieLens releases, local files and synthetic data.

Every source returns the same frame: columns ``user``, ``item``, ``rating`` (float32) and
``timestamp`` (int64), one row per interaction. Filtering, binarisation and splitting are
the protocol's job (:mod:`harness.data.protocol`), not the source's.
"""

from __future__ import annotations

import inspect
import io
import logging
import os
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import pandas as pd
from tqdm.auto import tqdm

from harness.data.download import DownloadError, download_verified, fetch_recbole_ml100k
from harness.data.synthetic import generate_synthetic
from harness.errors import DataError, DataFileError, DataKeyError

log = logging.getLogger(__name__)

GROUPLENS_URL = "https://files.grouplens.org/datasets/movielens/"
COLUMNS = ["user", "item", "rating", "timestamp"]
_DTYPES = {"user": "int32", "item": "int32", "rating": "float32", "timestamp": "int64"}
_CSV_CHUNK_ROWS = 2_000_000


@dataclass(frozen=True)
class MovieLensRelease:
    """One GroupLens archive: where its ratings are and how they are written."""

    name: str
    size: int
    sha256: str
    member: str
    format: str  # "udata" (tab, no header) | "dat" ("::", no header) | "csv" (header)


MOVIELENS: dict[str, MovieLensRelease] = {
    r.name: r
    for r in (
        MovieLensRelease("ml-100k", 4_924_029, "50d2a982c66986937beb9ffb3aa76efe955bf3d5c6b761f4e3a7cd717c6a3229", "ml-100k/u.data", "udata"),
        MovieLensRelease("ml-1m", 5_917_549, "a6898adb50b9ca05aa231689da44c217cb524e7ebd39d264c56e2832f2c54e20", "ml-1m/ratings.dat", "dat"),
        MovieLensRelease("ml-20m", 198_702_078, "96f243c338a8665f6bcc89c53edf6ee39162a846940de6b7c8c48aeada765ff3", "ml-20m/ratings.csv", "csv"),
        MovieLensRelease("ml-25m", 261_978_986, "8b21cfb7eb1706b4ec0aac894368d90acf26ebdfb6aced3ebd4ad5bd1eb9c6aa", "ml-25m/ratings.csv", "csv"),
    )
}  # fmt: skip


def default_cache_dir() -> Path:
    """Return the dataset cache: ``$VAE_SWEEP_DATA_DIR`` if set, else ``~/.cache/vae-sweep``."""
    env = os.environ.get("VAE_SWEEP_DATA_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "vae-sweep"


def _finish(frame: pd.DataFrame, *, id_dtype: str | None = "int32") -> pd.DataFrame:
    """Select the four columns in order and cast them to the contract dtypes."""
    dtypes = dict(_DTYPES)
    if id_dtype is None:  # file source: ids stay as given (strings or ints)
        del dtypes["user"], dtypes["item"]
    return frame[COLUMNS].astype(dtypes).reset_index(drop=True)


def _parse_ratings(
    stream: IO[bytes], fmt: str, *, total: int, desc: str, progress: bool
) -> pd.DataFrame:
    """Parse one MovieLens ratings file (a binary stream) into the standard frame."""
    with tqdm.wrapattr(
        stream, "read", total=total, desc=desc, unit="B", unit_scale=True, disable=not progress
    ) as fh:
        if fmt == "dat":
            # "::" needs pandas' slow python engine; a byte replace keeps the C parser.
            fh = io.BytesIO(fh.read().replace(b"::", b"\t"))
        if fmt == "inter":  # recbole: typed header such as "user_id:token"
            frame = pd.read_csv(fh, sep="\t")
            frame.columns = COLUMNS
            return _finish(frame)
        if fmt == "csv":
            names, header, sep = None, 0, ","
        else:
            names, header, sep = COLUMNS, None, "\t"
        # Chunked so ML-20M/25M never hold the whole file as float64/object columns.
        parts = []
        for chunk in pd.read_csv(
            fh, sep=sep, header=header, names=names, chunksize=_CSV_CHUNK_ROWS
        ):
            chunk.columns = COLUMNS
            parts.append(_finish(chunk))
    return pd.concat(parts, ignore_index=True)


def load_movielens(
    name: str,
    *,
    data_dir: str | Path | None = None,
    base_url: str = GROUPLENS_URL,
    progress: bool = True,
    expected_sha256: str | None = None,
    expected_size: int | None = None,
    offline_fallback: bool = True,
    timeout: float = 10.0,
) -> pd.DataFrame:
    """Load a GroupLens MovieLens release, downloading and verifying it once.

    Order of preference: the parsed Parquet cache, the cached zip, (ml-100k only) a cached
    offline copy, a fresh download of ``<base_url>/<name>.zip``. If the download fails for a
    network reason and ``name`` is ``ml-100k``, the identical ratings are taken from the PyPI
    wheel ``recbole==1.2.1`` (see :func:`harness.data.download.fetch_recbole_ml100k`); a
    checksum mismatch never falls back, it raises.

    Args:
        name: ``ml-100k``, ``ml-1m``, ``ml-20m`` or ``ml-25m``.
        data_dir: Cache folder; None means :func:`default_cache_dir`.
        base_url: Folder URL holding ``<name>.zip`` (overridable for mirrors and tests).
        progress: Show progress bars for download and parsing.
        expected_sha256: Override the official sha256 (for mirrors and tests).
        expected_size: Override the official size in bytes (only with ``expected_sha256``).
        offline_fallback: Allow the PyPI fallback for ml-100k.
        timeout: Socket timeout in seconds for the GroupLens request.

    Returns:
        Frame with user, item (int32), rating (float32), timestamp (int64).

    Raises:
        DownloadError: The archive could not be fetched (and no fallback applied).
        ChecksumError: The archive (or offline copy) failed verification.
    """
    release = MOVIELENS[name]
    sha = (expected_sha256 or release.sha256).lower()
    size = expected_size if expected_sha256 else release.size
    cache = Path(data_dir).expanduser() if data_dir is not None else default_cache_dir()
    parsed = cache / f"{name}-{sha[:12]}.parquet"
    if parsed.exists():
        log.info("%s: using parsed cache %s", name, parsed)
        return pd.read_parquet(parsed)
    archive = cache / f"{name}.zip"
    inter = cache / "ml-100k.inter"
    if name == "ml-100k" and not archive.exists() and inter.exists() and expected_sha256 is None:
        log.info("ml-100k: using cached offline copy %s", inter)
        return _read_inter(inter, progress)
    url = base_url.rstrip("/") + f"/{name}.zip"
    try:
        download_verified(url, archive, sha256=sha, size=size, progress=progress, timeout=timeout)
    except DownloadError as exc:
        if name != "ml-100k" or not offline_fallback:
            raise
        log.warning(
            "ml-100k: GroupLens unreachable (%s); using the identical ratings shipped in the "
            "PyPI wheel recbole==1.2.1",
            exc.__cause__ or exc,
        )
        return _read_inter(fetch_recbole_ml100k(inter, progress=progress), progress)
    log.info("%s: parsing %s (member %s)", name, archive, release.member)
    with zipfile.ZipFile(archive) as zf:
        if release.member not in zf.namelist():
            raise DataKeyError(
                f"{archive} has no member {release.member!r} (members: {zf.namelist()[:10]}). "
                f"Fix: delete {archive} and check that base_url serves the GroupLens {name}.zip."
            )
        info = zf.getinfo(release.member)
        with zf.open(info) as raw:
            frame = _parse_ratings(
                raw, release.format, total=info.file_size, desc=f"parse {name}", progress=progress
            )
    tmp = parsed.with_name(f".{parsed.name}.{os.getpid()}.part")
    try:  # Parquet makes the next load of ML-20M/25M a second instead of a minute.
        frame.to_parquet(tmp, index=False)
        os.replace(tmp, parsed)
    finally:
        tmp.unlink(missing_ok=True)
    return frame


def _read_inter(path: Path, progress: bool) -> pd.DataFrame:
    with open(path, "rb") as fh:
        size = path.stat().st_size
        return _parse_ratings(fh, "inter", total=size, desc="parse ml-100k", progress=progress)


_SEPARATORS = {".csv": ",", ".tsv": "\t", ".tab": "\t", ".txt": "\t", ".parquet": "parquet"}


def load_file(
    path: str | Path,
    *,
    sep: str | None = None,
    user_col: str | int = "user",
    item_col: str | int = "item",
    rating_col: str | int | None = "rating",
    timestamp_col: str | int | None = None,
    header: bool = True,
) -> pd.DataFrame:
    """Load interactions from a CSV, TSV or Parquet file with configurable column names.

    Args:
        path: The file. A compression suffix (``.gz``, ``.bz2``, ``.zip``, ``.xz``) is allowed.
        sep: Field separator or ``"parquet"``; None infers it from the suffix (``.csv`` comma,
            ``.tsv``/``.tab``/``.txt`` tab, ``.parquet``).
        user_col: Column holding user ids (a name, or a 0-based position when header=False).
            Ids are kept as given (strings stay strings).
        item_col: Column holding item ids, likewise.
        rating_col: Rating column; None gives every row rating 1.0 (implicit feedback).
        timestamp_col: Unix-seconds column; None gives every row timestamp 0.
        header: Whether a text file's first line names the columns (ignored for Parquet).

    Returns:
        Frame with user, item (as in the file), rating (float32), timestamp (int64).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: Unknown suffix without ``sep``, configured columns missing, or a row
            with an empty id or a non-numeric rating/timestamp (the row is named).
    """
    if str(path) in ("???", "", "None"):
        raise DataFileError(
            "dataset.options.path is not set: dataset=file reads your own interactions. Fix: "
            "add dataset.options.path=/path/to/interactions.csv (CSV, TSV or Parquet)."
        )
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataFileError(
            f"Interaction file {path} does not exist. Fix: set dataset.options.path to an "
            "existing CSV/TSV/Parquet file (absolute, or relative to the working directory)."
        )
    suffixes = [s.lower() for s in path.suffixes if s.lower() not in {".gz", ".bz2", ".zip", ".xz"}]
    if sep is None:
        sep = _SEPARATORS.get(suffixes[-1] if suffixes else "")
        if sep is None:
            raise DataError(
                f"Cannot infer the format of {path.name}. Fix: set dataset.options.sep "
                '(e.g. "," or "\\t" or "parquet").'
            )
    if sep == "parquet":
        try:
            frame = pd.read_parquet(path)
        except (OSError, ValueError) as error:  # pyarrow's ArrowInvalid is a ValueError
            raise DataError(
                f"{path} is not a readable Parquet file ({type(error).__name__}: "
                f"{_short(error)}). Fix: point dataset.options.path at a Parquet file, or set "
                "dataset.options.sep for a text file."
            ) from None
        line_offset = 0
    else:
        compressed = path.suffix.lower() in {".gz", ".bz2", ".zip", ".xz"}
        if not compressed:
            with path.open("rb") as handle:
                start = handle.read(8192)
            if b"\x00" in start:
                raise DataError(
                    f"{path} is not a text file (it holds NUL bytes): a binary or compressed "
                    "file? Fix: point dataset.options.path at a UTF-8 CSV/TSV (compressed ones "
                    "need their suffix, e.g. .csv.gz) or a .parquet file, or set "
                    'dataset.options.sep="parquet".'
                )
        try:
            frame = pd.read_csv(path, sep=sep, header=0 if header else None)
        except UnicodeDecodeError as error:
            raise DataError(
                f"{path} is not a text file (byte {error.object[error.start : error.start + 1]!r} "
                f"at offset {error.start} is not UTF-8): a binary or compressed file? Fix: point "
                "dataset.options.path at a UTF-8 CSV/TSV (compressed ones need their suffix, "
                'e.g. .csv.gz) or a .parquet file, or set dataset.options.sep="parquet".'
            ) from None
        except pd.errors.EmptyDataError:
            raise DataError(
                f"{path} is empty (no header, no rows). Fix: point dataset.options.path at a "
                "file with interactions."
            ) from None
        except pd.errors.ParserError as error:
            raise DataError(
                f"{path} is not a readable {sep!r}-separated file ({_short(error)}). Fix: set "
                "dataset.options.sep or clean the file."
            ) from None
        if frame.empty:
            raise DataError(
                f"{path} has a header but no rows. Fix: point dataset.options.path at a file "
                "with interactions."
            )
        line_offset = 2 if header else 1  # 0-based row -> 1-based line in the file
    wanted = {"user_col": user_col, "item_col": item_col}
    wanted |= {"rating_col": rating_col, "timestamp_col": timestamp_col}
    missing = {k: v for k, v in wanted.items() if v is not None and v not in frame.columns}
    if missing:
        keys = ", ".join(f"{k}={v!r}" for k, v in missing.items())
        raise DataError(
            f"{path.name}: configured column(s) {keys} not found; the file has columns "
            f"{_short(list(frame.columns))}. Fix: set dataset.options.{next(iter(missing))} (and the "
            "other *_col keys) to the file's column names"
            + ("" if header else " or positions (header=false)")
            + "; rating_col/timestamp_col may be null."
        )
    out = pd.DataFrame({"user": frame[user_col], "item": frame[item_col]})
    for col in ("user", "item"):
        bad = out[col].isna().to_numpy()
        if bad.any():
            _bad_row(path, bad, line_offset, wanted[f"{col}_col"], frame, "is empty")
    out["rating"] = _numeric(frame, rating_col, 1.0, path, line_offset)
    out["timestamp"] = _numeric(frame, timestamp_col, 0, path, line_offset)
    return _finish(out, id_dtype=None)


def _numeric(
    frame: pd.DataFrame, col: str | int | None, default: float, path: Path, line_offset: int
) -> Any:
    """Return column ``col`` as numbers (or ``default`` if None); name the first bad row."""
    if col is None:
        return default
    values = pd.to_numeric(frame[col], errors="coerce")
    bad = values.isna().to_numpy()
    if bad.any():
        _bad_row(path, bad, line_offset, col, frame, "is not a number")
    return values


def _short(value: Any, limit: int = 120) -> str:
    """``repr(value)`` (str() for exceptions) cut to ``limit`` characters: a data file's
    50 MB line must not become a 50 MB error message."""
    text = str(value) if isinstance(value, BaseException) else repr(value)
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text):,} characters)"


def _bad_row(
    path: Path, bad: Any, line_offset: int, col: Any, frame: pd.DataFrame, what: str
) -> None:
    row = int(bad.argmax())
    where = f"line {row + line_offset}" if line_offset else f"row {row}"
    raise DataError(
        f"{path.name} {where} (data row {row}), column {_short(col)}: value "
        f"{_short(frame[col].iloc[row])} "
        f"{what} ({int(bad.sum())} bad row(s) in total). Fix: clean the file or map "
        "the *_col options to the right columns."
    )


_LOADERS: dict[str, Callable[..., pd.DataFrame]] = {
    "file": load_file,
    "synthetic": generate_synthetic,
}


def load_interactions(name: str, **options: Any) -> pd.DataFrame:
    """Load a dataset by source name.

    Args:
        name: ``ml-100k``, ``ml-1m``, ``ml-20m``, ``ml-25m`` (see :func:`load_movielens`),
            ``file`` (:func:`load_file`) or ``synthetic``
            (:func:`harness.data.synthetic.generate_synthetic`).
        **options: Keyword arguments of that loader. ``data_dir`` and ``progress`` are
            accepted by every source so callers can pass them uniformly; ``file`` ignores
            both and ``synthetic`` ignores ``data_dir``.

    Returns:
        Frame with columns user, item, rating (float32), timestamp (int64).

    Raises:
        ValueError: Unknown source name or unknown option (valid ones are listed).
    """
    if name in MOVIELENS:
        return load_movielens(name, **_check_options(name, load_movielens, options))
    if name not in _LOADERS:
        known = sorted([*MOVIELENS, *_LOADERS])
        raise DataError(f"Unknown dataset {name!r}. Fix: use one of {known}.")
    loader = _LOADERS[name]
    accepted = inspect.signature(loader).parameters
    options = {
        k: v for k, v in options.items() if k in accepted or k not in ("data_dir", "progress")
    }
    return loader(**_check_options(name, loader, options))


def _check_options(name: str, loader: Callable[..., Any], options: dict[str, Any]) -> dict:
    params = [p for p in inspect.signature(loader).parameters if p != "name"]
    unknown = sorted(set(options) - set(params))
    if unknown:
        raise DataError(
            f"Unknown option(s) {unknown} for dataset {name!r}. Fix: remove them from "
            f"dataset.options; valid options are {params}."
        )
    return options
