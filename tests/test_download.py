"""MovieLens download path against a local HTTP server, and the offline ml-100k fallback."""

from __future__ import annotations

import hashlib
import io
import socket
import threading
import zipfile
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from harness.data.download import ChecksumError, DownloadError, download_verified
from harness.data.sources import load_interactions

# user, item, rating, timestamp: ratings include halves (ml-20m/25m) and a 3.5 edge.
ROWS = [(1, 10, 5.0, 881250949), (1, 20, 3.0, 881250950), (2, 10, 4.0, 891717742),
        (2, 30, 1.0, 878887116), (3, 20, 3.5, 880606923), (3, 40, 4.5, 884182806)]  # fmt: skip
INT_ROWS = [(u, i, int(r), t) for u, i, r, t in ROWS if r == int(r)]


def _zip(member: str, text: str) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(member, text)
    return buf.getvalue()


# name -> (zip bytes in the release's own format, rows it holds)
ARCHIVES = {
    "ml-100k": (_zip("ml-100k/u.data", "".join(f"{u}\t{i}\t{r}\t{t}\n" for u, i, r, t in INT_ROWS)), INT_ROWS),
    "ml-1m": (_zip("ml-1m/ratings.dat", "".join(f"{u}::{i}::{r}::{t}\n" for u, i, r, t in INT_ROWS)), INT_ROWS),
    "ml-20m": (_zip("ml-20m/ratings.csv", "userId,movieId,rating,timestamp\n" + "".join(f"{u},{i},{r},{t}\n" for u, i, r, t in ROWS)), ROWS),
    "ml-25m": (_zip("ml-25m/ratings.csv", "userId,movieId,rating,timestamp\n" + "".join(f"{u},{i},{r},{t}\n" for u, i, r, t in ROWS)), ROWS),
}  # fmt: skip


class _Server:
    """Serves ``files`` (path -> bytes) on 127.0.0.1 and counts requests."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files, self.requests = files, 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server API)
                outer.requests += 1
                body = outer.files.get(self.path)
                self.send_response(200 if body is not None else 404)
                self.send_header("Content-Length", str(len(body or b"")))
                self.end_headers()
                self.wfile.write(body or b"")

            def log_message(self, *args: object) -> None:  # keep pytest output clean
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/movielens/"
        threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True).start()


@pytest.fixture
def server() -> Iterator[_Server]:
    srv = _Server({f"/movielens/{n}.zip": data for n, (data, _) in ARCHIVES.items()})
    yield srv
    srv.httpd.shutdown()
    srv.httpd.server_close()


def _closed_port_url() -> str:
    with socket.socket() as s:  # bind then close: nothing listens, connecting is refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


def _no_subprocess(*args: object, **kwargs: object) -> None:
    raise AssertionError("pip must not run when the offline copy is cached")


def _checksums(name: str) -> dict:
    data = ARCHIVES[name][0]
    return {"expected_sha256": hashlib.sha256(data).hexdigest(), "expected_size": len(data)}


@pytest.mark.parametrize("name", sorted(ARCHIVES))
def test_download_parse_and_cache(name: str, server: _Server, tmp_path: Path) -> None:
    opts = dict(data_dir=tmp_path, base_url=server.url, progress=False, **_checksums(name))
    frame = load_interactions(name, **opts)
    rows = ARCHIVES[name][1]
    assert list(frame.columns) == ["user", "item", "rating", "timestamp"]
    assert frame["rating"].dtype == np.float32 and frame["timestamp"].dtype == np.int64
    assert frame.to_numpy().tolist() == [list(r) for r in rows]
    assert server.requests == 1
    assert (tmp_path / f"{name}.zip").read_bytes() == ARCHIVES[name][0]
    assert len(list(tmp_path.glob(f"{name}-*.parquet"))) == 1  # parsed once, kept
    again = load_interactions(name, **opts)
    assert server.requests == 1, "second load must come from the cache"
    pd.testing.assert_frame_equal(frame, again)
    assert not list(tmp_path.glob(".*")), "no temporary files left behind"


def test_wrong_checksum_raises_and_caches_nothing(server: _Server, tmp_path: Path) -> None:
    with pytest.raises(ChecksumError) as err:
        load_interactions(
            "ml-1m", data_dir=tmp_path, base_url=server.url, progress=False,
            expected_sha256="0" * 64,
        )  # fmt: skip
    message = str(err.value)
    assert "ml-1m.zip" in message and "0" * 64 in message
    assert hashlib.sha256(ARCHIVES["ml-1m"][0]).hexdigest() in message
    assert "base_url" in message and "download again" in message
    assert list(tmp_path.iterdir()) == []


def test_wrong_checksum_on_ml100k_does_not_fall_back(server: _Server, tmp_path: Path) -> None:
    with pytest.raises(ChecksumError):
        load_interactions("ml-100k", data_dir=tmp_path, base_url=server.url, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_size_mismatch(server: _Server, tmp_path: Path) -> None:
    sums = _checksums("ml-20m")
    with pytest.raises(ChecksumError, match="Size of ml-20m.zip"):
        download_verified(
            server.url + "ml-20m.zip", tmp_path / "ml-20m.zip", progress=False,
            sha256=sums["expected_sha256"], size=sums["expected_size"] + 1,
        )  # fmt: skip
    assert list(tmp_path.iterdir()) == []


def test_http_error_without_fallback(server: _Server, tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match="base_url"):
        load_interactions(
            "ml-20m", data_dir=tmp_path, base_url=server.url + "missing/", progress=False
        )
    with pytest.raises(DownloadError, match="Connection refused|refused"):
        load_interactions(
            "ml-100k", data_dir=tmp_path, base_url=_closed_port_url(), progress=False,
            offline_fallback=False,
        )  # fmt: skip
    assert list(tmp_path.iterdir()) == []


def test_ml100k_offline_fallback_real_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """GroupLens unreachable -> the recbole wheel from PyPI supplies the real ratings."""
    url = _closed_port_url()
    frame = load_interactions("ml-100k", data_dir=tmp_path, base_url=url, progress=False)
    assert len(frame) == 100_000
    assert frame["user"].nunique() == 943 and frame["item"].nunique() == 1682
    assert int((frame["rating"] > 3.5).sum()) == 55_375
    assert frame["rating"].dtype == np.float32 and frame["timestamp"].dtype == np.int64
    assert frame.iloc[0].tolist() == [196, 242, 3.0, 881250949]  # u.data's first line
    assert (tmp_path / "ml-100k.inter").exists()
    # Second call: from the cache, with pip made unusable to prove it is not run again.
    monkeypatch.setattr("harness.data.download.subprocess.run", _no_subprocess)
    again = load_interactions("ml-100k", data_dir=tmp_path, base_url=url, progress=False)
    pd.testing.assert_frame_equal(frame, again)
