"""The dataset downloader, against a local HTTP server on 127.0.0.1 (never the real hosts)."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import tarfile
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from reinforcens.cli import main
from reinforcens.data import download as dl
from reinforcens.data.formats import available_formats, read_log

FIX = Path(__file__).parent / "fixtures" / "formats"


def _zip_of(folder: Path, prefix: str) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for f in sorted(folder.rglob("*")):
            if f.is_file():
                zf.write(f, f"{prefix}/{f.relative_to(folder)}")
    return buf.getvalue()


def _targz_of(folder: Path, prefix: str) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        tf.add(folder, arcname=prefix)
    return buf.getvalue()


class Server:
    """A tiny file server with HTTP Range support and switchable faults.

    ``files`` maps a path (``/name``) to its bytes; ``truncate`` holds paths whose next full
    response stops halfway; ``corrupt`` paths are served with one byte flipped; ``ignore_range``
    makes the server answer every request with the whole file.
    """

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.truncate: set[str] = set()
        self.corrupt: set[str] = set()
        self.ignore_range = False
        self.requests: list[tuple[str, str | None]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # keep test output quiet
                pass

            def do_GET(self) -> None:  # noqa: N802 - the http.server API
                rng = self.headers.get("Range")
                server.requests.append((self.path, rng))
                data = server.files.get(self.path)
                if data is None:
                    self.send_error(404, "Not Found")
                    return
                if self.path in server.corrupt:
                    data = data[:100] + bytes([data[100] ^ 0xFF]) + data[101:]
                start = 0
                if rng and not server.ignore_range:
                    start = int(rng.removeprefix("bytes=").split("-")[0])
                    if start >= len(data):
                        self.send_error(416, "Range Not Satisfiable")
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                body = data[start:]
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Accept-Ranges", "bytes")
                self.end_headers()
                if self.path in server.truncate and start == 0:
                    server.truncate.discard(self.path)
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def server():
    s = Server()
    yield s
    s.close()


@pytest.fixture
def archive() -> bytes:
    return _zip_of(FIX / "mind", "MINDtiny")


def _dataset(server: Server, archive: bytes, sha: str | None, name: str = "tiny") -> dl.Dataset:
    server.files["/tiny.zip"] = archive
    return dl.Dataset(
        name=name,
        title="a test archive",
        format="mind",
        homepage="http://127.0.0.1/",
        license="test",
        size="1 KB",
        files=(dl.RemoteFile(server.url + "/tiny.zip", sha256=sha),),
    )


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _get(info, tmp_path, **kw):
    kw.setdefault("progress", False)
    kw.setdefault("retry_wait", 0)
    kw.setdefault("log", lambda msg: None)
    return dl.download(info, tmp_path, **kw)


def test_good_download_verifies_unpacks_and_marks(server, archive, tmp_path):
    info = _dataset(server, archive, _sha(archive))
    target = _get(info, tmp_path)
    assert target == tmp_path / "tiny"
    assert (target / "MINDtiny" / "MINDsmall_train" / "behaviors.tsv").is_file()
    assert not (target / "tiny.zip").exists()
    marker = json.loads((target / dl.MARKER).read_text())
    assert marker["verified"] and marker["files"][0]["sha256"] == _sha(archive)
    assert marker["files"][0]["checksum_known"] is True
    log = read_log(target, "mind")  # the unpacked copy reads
    assert log.n_users == 8


def test_verified_copy_is_not_overwritten_without_force(server, archive, tmp_path):
    info = _dataset(server, archive, _sha(archive))
    _get(info, tmp_path)
    n = len(server.requests)
    messages = []
    _get(info, tmp_path, log=messages.append)
    assert len(server.requests) == n
    assert "already downloaded and verified" in messages[0]
    _get(info, tmp_path, force=True, keep_archives=True)
    assert len(server.requests) == n + 1
    assert (tmp_path / "tiny" / "tiny.zip").is_file()


def test_truncated_transfer_resumes_with_range(server, archive, tmp_path):
    info = _dataset(server, archive, _sha(archive))
    server.truncate.add("/tiny.zip")
    messages = []
    target = _get(info, tmp_path, log=messages.append)
    assert dl.read_marker(target) is not None
    ranges = [r for p, r in server.requests if p == "/tiny.zip"]
    assert ranges[0] is None and ranges[1] == f"bytes={len(archive) // 2}-"
    assert any("resuming" in m for m in messages)


def test_broken_download_resumes_on_the_next_call(server, archive, tmp_path):
    info = _dataset(server, archive, _sha(archive))
    server.truncate.add("/tiny.zip")
    with pytest.raises(dl.DownloadError, match="partial file .* is kept"):
        _get(info, tmp_path, retries=1)
    part = tmp_path / "tiny" / "tiny.zip.part"
    assert part.stat().st_size == len(archive) // 2
    assert dl.read_marker(tmp_path / "tiny") is None
    _get(info, tmp_path, retries=1)
    assert server.requests[-1][1] == f"bytes={len(archive) // 2}-"
    assert dl.read_marker(tmp_path / "tiny") is not None
    assert not part.exists()


def test_server_ignoring_range_restarts_cleanly(server, archive, tmp_path):
    info = _dataset(server, archive, _sha(archive))
    part = tmp_path / "tiny" / "tiny.zip.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(archive[:500])
    server.ignore_range = True
    _get(info, tmp_path)
    assert server.requests[-1][1] == "bytes=500-"
    assert dl.read_marker(tmp_path / "tiny") is not None


def test_complete_part_file_is_verified_without_refetching(server, archive, tmp_path):
    info = _dataset(server, archive, _sha(archive))
    part = tmp_path / "tiny" / "tiny.zip.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(archive)
    _get(info, tmp_path)  # the server answers 416: nothing left to send
    assert dl.read_marker(tmp_path / "tiny") is not None


def test_corrupted_download_fails_and_leaves_nothing_marked(server, archive, tmp_path):
    info = _dataset(server, archive, _sha(archive))
    _get(info, tmp_path)
    server.corrupt.add("/tiny.zip")
    with pytest.raises(dl.DownloadError, match="checksum mismatch"):
        _get(info, tmp_path, force=True)
    target = tmp_path / "tiny"
    assert dl.read_marker(target) is None
    assert not (target / "tiny.zip.part").exists() and not (target / "tiny.zip").exists()


def test_unknown_checksum_is_computed_and_recorded(server, archive, tmp_path):
    info = _dataset(server, archive, None)
    messages = []
    target = _get(info, tmp_path, log=messages.append)
    marker = dl.read_marker(target)
    assert marker["files"][0]["sha256"] == _sha(archive)
    assert marker["files"][0]["checksum_known"] is False
    assert any("no published checksum" in m and _sha(archive) in m for m in messages)


def test_size_mismatch_is_refused(server, archive, tmp_path):
    server.files["/tiny.zip"] = archive
    info = dl.Dataset("tiny", "t", "mind", "h", "l", "s", (dl.RemoteFile(server.url + "/tiny.zip", size=7),))
    with pytest.raises(dl.DownloadError, match="expected 7"):
        _get(info, tmp_path)
    assert dl.read_marker(tmp_path / "tiny") is None


def test_archives_without_a_top_folder_unpack_side_by_side(server, tmp_path):
    # like MIND: two archives whose files lie at their root
    for split in ("MINDsmall_train", "MINDsmall_dev"):
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as zf:
            zf.write(FIX / "mind" / split / "behaviors.tsv", "behaviors.tsv")
            zf.writestr("news.tsv", "N1\tnews\n")
        server.files[f"/{split}.zip"] = buf.getvalue()
    official = dl.DATASETS["mind-small"]
    info = dataclasses.replace(official, files=tuple(dl.RemoteFile(f.url) for f in official.files))
    target = _get(info, tmp_path, base_url=server.url)
    assert (target / "MINDsmall_train" / "behaviors.tsv").is_file()
    assert (target / "MINDsmall_dev" / "behaviors.tsv").is_file()
    log = read_log(target, "mind")
    assert log.to_frame().groupby("user").session.nunique().min() == 5


def test_tar_gz_and_base_url_override(server, tmp_path, monkeypatch):
    data = _targz_of(FIX / "kuairand", "KuaiRand-Pure")
    server.files["/KuaiRand-Pure.tar.gz"] = data
    info = dl.DATASETS["kuairand-pure"]
    target = _get(info, tmp_path, base_url=server.url)
    assert (target / "KuaiRand-Pure" / "data" / "log_standard_4_08_to_4_21_pure.csv").is_file()
    assert read_log(target, "kuairand").n_users == 8
    # the environment variable does the same
    monkeypatch.setenv(dl.ENV_BASE_URL, server.url)
    _get(info, tmp_path / "other")
    assert dl.read_marker(tmp_path / "other" / "kuairand-pure") is not None


def test_http_errors_and_manual_datasets(server, tmp_path):
    info = dl.Dataset("gone", "t", "mind", "h", "l", "s", (dl.RemoteFile(server.url + "/missing.zip"),))
    with pytest.raises(dl.DownloadError, match="HTTP 404"):
        _get(info, tmp_path)
    with pytest.raises(dl.DownloadError, match="cannot be downloaded automatically"):
        _get("trivago-2019", tmp_path)
    with pytest.raises(dl.DownloadError, match="unknown dataset 'nope'"):
        _get("nope", tmp_path)


def test_unreachable_server_keeps_going_nowhere(tmp_path):
    info = dl.Dataset("x", "t", "mind", "h", "l", "s", (dl.RemoteFile("http://127.0.0.1:9/x.zip"),))
    with pytest.raises(dl.DownloadError, match="cannot connect"):
        _get(info, tmp_path, retries=2, timeout=2)


def test_unsafe_zip_is_refused(server, tmp_path):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("../evil.txt", "x")
    data = buf.getvalue()
    info = _dataset(server, data, _sha(data))
    with pytest.raises(dl.DownloadError, match="unsafe path"):
        _get(info, tmp_path)
    assert not (tmp_path / "evil.txt").exists()
    assert dl.read_marker(tmp_path / "tiny") is None


def test_registry_entries_are_complete():
    for name, d in dl.DATASETS.items():
        assert name == d.name
        assert d.format in available_formats()
        assert d.homepage.startswith("https://")
        assert d.license and d.size and d.title
        assert bool(d.files) != bool(d.manual)
        for f in d.files:
            assert f.url.startswith("https://") and f.filename


# --------------------------------------------------------------------------------------------------
# the command line


def test_cli_list(capsys):
    assert main(["datasets", "list"]) == 0
    out = capsys.readouterr().out
    for name, d in dl.DATASETS.items():
        assert name in out and d.url in out
    assert main(["datasets", "list", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["name"] for r in rows} == set(dl.DATASETS)
    assert {"name", "url", "license", "size", "format"} <= set(rows[0])


def test_cli_download(server, archive, tmp_path, capsys, monkeypatch):
    server.files["/coat.zip"] = _zip_of(FIX / "ratings" / "coat", "coat")
    args = ["datasets", "download", "coat", "--dir", str(tmp_path), "--base-url", server.url]
    assert main(args) == 0
    out = capsys.readouterr()
    assert "verified copy" in out.out
    assert f"--input {tmp_path / 'coat' / 'coat'} --format ratings" in out.out
    assert "no published checksum" in out.err
    assert read_log(tmp_path / "coat" / "coat", "ratings").n_users == 8
    # a second run does not download again
    n = len(server.requests)
    assert main(args) == 0
    assert len(server.requests) == n
    assert "already downloaded" in capsys.readouterr().err
    # a corrupted copy with a known checksum: exit 2, one-line message, nothing marked
    info = _dataset(server, archive, _sha(archive), name="tiny-cli")
    monkeypatch.setitem(dl.DATASETS, "tiny-cli", info)
    server.corrupt.add("/tiny.zip")
    code = main(["datasets", "download", "tiny-cli", "--dir", str(tmp_path), "--retries", "1"])
    err = capsys.readouterr().err
    assert code == 2 and "checksum mismatch" in err and "Traceback" not in err
    assert dl.read_marker(tmp_path / "tiny-cli") is None


def test_cli_download_errors(capsys, tmp_path):
    assert main(["datasets", "download", "yahoo-r3", "--dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "Webscope" in err and "Traceback" not in err
    assert main(["datasets", "download", "no-such", "--dir", str(tmp_path)]) == 2
    assert "unknown dataset" in capsys.readouterr().err
    assert main(["datasets"]) == 1


def test_md5_is_checked_where_only_md5_is_published(server, tmp_path):
    """GroupLens publishes MD5 sums only: a right one verifies, a wrong one refuses the file."""
    import io
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:  # an ML-100K-shaped archive of four ratings
        z.writestr("ml-100k/u.data", "1\t10\t5\t881250949\n1\t11\t2\t881250950\n2\t10\t4\t881250951\n"
                   "2\t12\t1\t891250951\n")  # fmt: skip
    data = buf.getvalue()
    server.files["/ml-100k.zip"] = data
    official = dl.DATASETS["movielens-100k"]
    good = dataclasses.replace(
        official,
        files=(dl.RemoteFile(server.url + "/ml-100k.zip", md5=hashlib.md5(data).hexdigest()),),
    )
    target = _get(good, tmp_path)
    assert dl.read_marker(target)["files"][0]["checksum_known"] is True
    log = read_log(target / official.input_hint, official.format)
    assert log.n_users == 2 and int(log.clicked.sum()) == 2  # ratings 5 and 4 are the clicks
    bad = dataclasses.replace(official, files=(dl.RemoteFile(server.url + "/ml-100k.zip", md5="0" * 32),))
    with pytest.raises(dl.DownloadError, match="checksum mismatch \\(MD5"):
        _get(bad, tmp_path / "other")
    assert dl.read_marker(tmp_path / "other" / official.name) is None
