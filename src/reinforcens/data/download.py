"""Known public impression datasets and a careful downloader for them.

:data:`DATASETS` lists each dataset with its official address, license, size and the reader format
that reads it. :func:`download` fetches the files of one dataset with a progress bar, resumes a broken
transfer from its ``*.part`` file with an HTTP ``Range`` request, verifies the SHA-256 checksum where
one is known (and records the computed one where not), unpacks ``.zip``/``.tar.gz`` archives (an
archive without a single top-level folder goes to a folder named after it, so that MIND's train and
dev archives do not overwrite each other) and writes a marker file naming the verified copy. A
directory with such a marker is never overwritten unless ``force=True``.

Some datasets cannot be fetched without registering on their site: their entries carry ``manual``
instructions instead of files.

The base address of every file can be replaced (``base_url=`` or the environment variable
``REINFORCENS_DATASETS_URL``), e.g. to use a mirror: the file name is then appended to that base.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tarfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from http.client import HTTPException
from pathlib import Path

from tqdm.auto import tqdm

from reinforcens.atomic import atomic_write_json
from reinforcens.errors import ReinforcensError

ENV_BASE_URL = "REINFORCENS_DATASETS_URL"
ENV_DATA_DIR = "REINFORCENS_DATA_DIR"
MARKER = ".reinforcens-download.json"
CHUNK = 1 << 20


class DownloadError(ReinforcensError):
    """A download that failed, did not verify, or was refused."""


@dataclass(frozen=True)
class RemoteFile:
    """One file of a dataset.

    Attributes
    ----------
    url
        The official address.
    sha256
        The expected SHA-256 of the file, or ``None`` where it is not known; the computed hash is
        then recorded in the marker.
    md5
        The expected MD5, for sources that publish only that (GroupLens); checked as well.
    size
        The size in bytes, where known (shown and checked).
    unpack
        Whether to unpack the archive after verification.
    """

    url: str
    sha256: str | None = None
    md5: str | None = None
    size: int | None = None
    unpack: bool = True

    @property
    def filename(self) -> str:
        return urllib.parse.urlsplit(self.url).path.rsplit("/", 1)[-1]


@dataclass(frozen=True)
class Dataset:
    """A known dataset.

    Attributes
    ----------
    name
        The short name used on the command line.
    title
        What it is.
    format
        The reader format (``reinforcens prepare --format``).
    homepage
        The official page (license, citation, documentation).
    license
        The license or terms of use, in short.
    size
        The download size, in words.
    files
        The files to download; empty when ``manual`` is set.
    manual
        How to obtain the data when it cannot be downloaded automatically.
    input_hint
        Where, below the dataset folder, ``--input`` should point (``""``: the folder itself).
    """

    name: str
    title: str
    format: str
    homepage: str
    license: str
    size: str
    files: tuple[RemoteFile, ...] = ()
    manual: str | None = None
    input_hint: str = ""
    notes: str = ""

    @property
    def url(self) -> str:
        """The address shown in listings: the first file, or the homepage."""
        return self.files[0].url if self.files else self.homepage


_MIND = "https://mind201910small.blob.core.windows.net/release/"
_EBNERD = "https://ebnerd-dataset.s3.eu-west-1.amazonaws.com/"
_KUAIRAND = "https://zenodo.org/records/10439422/files/"
_MSR_LICENSE = "Microsoft Research License Terms (non-commercial research)"
_EBNERD_LICENSE = "EB-NeRD terms of use (non-commercial research)"

DATASETS: dict[str, Dataset] = {
    d.name: d
    for d in (
        Dataset(
            name="mind-small",
            title="MIND small: Microsoft News impressions, 50k users, 6+1 days",
            format="mind",
            homepage="https://msnews.github.io/",
            license=_MSR_LICENSE,
            size="84 MB",
            files=(
                RemoteFile(_MIND + "MINDsmall_train.zip", size=52_952_752),
                RemoteFile(_MIND + "MINDsmall_dev.zip", size=30_945_572),
            ),
        ),
        Dataset(
            name="mind-large",
            title="MIND large: Microsoft News impressions, 1M users (train and dev)",
            format="mind",
            homepage="https://msnews.github.io/",
            license=_MSR_LICENSE,
            size="about 0.6 GB",
            files=(
                RemoteFile(_MIND + "MINDlarge_train.zip"),
                RemoteFile(_MIND + "MINDlarge_dev.zip"),
            ),
        ),
        Dataset(
            name="kuairand-pure",
            title="KuaiRand-Pure: Kuaishou video logs with random exposures, 27k users",
            format="kuairand",
            homepage="https://kuairand.com/",
            license="CC BY-SA 4.0",
            size="about 0.2 GB",
            files=(RemoteFile(_KUAIRAND + "KuaiRand-Pure.tar.gz"),),
        ),
        Dataset(
            name="kuairand-1k",
            title="KuaiRand-1K: Kuaishou video logs with random exposures, 1k users",
            format="kuairand",
            homepage="https://kuairand.com/",
            license="CC BY-SA 4.0",
            size="about 1.1 GB",
            files=(RemoteFile(_KUAIRAND + "KuaiRand-1K.tar.gz"),),
        ),
        Dataset(
            name="zhihurec",
            title="ZhihuRec: Zhihu answer impressions and clicks (1M, 20M, 100M versions)",
            format="zhihurec",
            homepage="https://github.com/THUIR/ZhihuRec-Dataset",
            license="see the homepage",
            size="0.1 to 10 GB by version",
            manual=(
                "Download a version (e.g. Zhihu1M) through the links on the homepage and unpack it "
                "so that inter_impression.csv lies in the dataset folder."
            ),
        ),
        Dataset(
            name="ebnerd-demo",
            title="EB-NeRD demo: Ekstra Bladet news impressions, a small sample",
            format="ebnerd",
            homepage="https://recsys.eb.dk/",
            license=_EBNERD_LICENSE,
            size="about 20 MB",
            files=(RemoteFile(_EBNERD + "ebnerd_demo.zip"),),
        ),
        Dataset(
            name="ebnerd-small",
            title="EB-NeRD small: Ekstra Bladet news impressions, 50k users",
            format="ebnerd",
            homepage="https://recsys.eb.dk/",
            license=_EBNERD_LICENSE,
            size="about 80 MB",
            files=(RemoteFile(_EBNERD + "ebnerd_small.zip"),),
        ),
        Dataset(
            name="ebnerd-large",
            title="EB-NeRD large: Ekstra Bladet news impressions, 1M users",
            format="ebnerd",
            homepage="https://recsys.eb.dk/",
            license=_EBNERD_LICENSE,
            size="about 3 GB",
            files=(RemoteFile(_EBNERD + "ebnerd_large.zip"),),
        ),
        Dataset(
            name="trivago-2019",
            title="Trivago RecSys Challenge 2019: hotel clickouts with the shown lists",
            format="trivago",
            homepage="https://recsys.trivago.cloud/challenge/dataset/",
            license="trivago RecSys Challenge 2019 dataset terms (non-commercial)",
            size="about 0.5 GB (2 GB unpacked)",
            manual=(
                "Register on the homepage, accept the terms, download the data and put train.csv "
                "in the dataset folder."
            ),
        ),
        Dataset(
            name="contentwise-impressions",
            title="ContentWise Impressions: TV and film streaming, interactions and impressions",
            format="contentwise",
            homepage="https://github.com/ContentWise/contentwise-impressions",
            license="CC BY-NC-SA 4.0",
            size="about 0.5 GB",
            manual=(
                "Get the download link through the form on the homepage, download the zip file and "
                "unpack it into the dataset folder (it holds data/ContentWiseImpressions/CW10M)."
            ),
        ),
        Dataset(
            name="coat",
            title="Coat: shoppers' ratings of coats, with a random-exposure test set",
            format="ratings",
            homepage="https://www.cs.cornell.edu/~schnabts/mnar/",
            license="research use, see the homepage",
            size="about 1 MB",
            files=(RemoteFile("https://www.cs.cornell.edu/~schnabts/mnar/coat.zip"),),
            input_hint="coat",
        ),
        Dataset(
            name="yahoo-r3",
            title="Yahoo! R3: song ratings with a random-exposure test set",
            format="ratings",
            homepage="https://webscope.sandbox.yahoo.com/catalog.php?datatype=r&did=3",
            license="Yahoo! Webscope data agreement (research use, no redistribution)",
            size="about 2 MB",
            manual=(
                "Request the data on Yahoo! Webscope, then put "
                "ydata-ymusic-rating-study-v1_0-train.txt and ...-test.txt in the dataset folder."
            ),
        ),
        Dataset(
            name="movielens-100k",
            title="MovieLens 100K: 100,000 ratings (1-5) of 1,682 movies by 943 users",
            format="movielens",
            homepage="https://grouplens.org/datasets/movielens/100k/",
            license="GroupLens research licence (no redistribution, citation required)",
            size="about 5 MB",
            files=(
                RemoteFile(
                    "https://files.grouplens.org/datasets/movielens/ml-100k.zip",
                    md5="0e33842e24a9c977be4e0107933c0723",
                ),
            ),
            input_hint="ml-100k",
            notes="ratings >= 4 are clicks and lower ratings shown-but-not-clicked (--option threshold=4)",
        ),
        Dataset(
            name="recbole",
            title="RecBole atomic files (.inter) of any dataset RecBole distributes",
            format="recbole",
            homepage="https://recbole.io/dataset_list.html",
            license="that of each original dataset",
            size="varies",
            manual=(
                "Download the atomic files of a dataset from the RecBole dataset list and put its "
                ".inter file in the dataset folder; set threshold= for rating data."
            ),
        ),
    )
}


def data_dir(directory: str | Path | None = None) -> Path:
    """Where datasets go: ``directory``, else ``$REINFORCENS_DATA_DIR``, else ``./data``."""
    if directory is not None:
        return Path(directory)
    return Path(os.environ.get(ENV_DATA_DIR, "data"))


def get_dataset(name: str) -> Dataset:
    """The registry entry of ``name``; DownloadError listing the known names otherwise."""
    try:
        return DATASETS[name]
    except KeyError:
        known = ", ".join(sorted(DATASETS))
        raise DownloadError(f"unknown dataset {name!r}; known: {known}") from None


def read_marker(target: Path) -> dict | None:
    """The marker of a verified copy in ``target``, or None."""
    marker = target / MARKER
    if not marker.is_file():
        return None
    try:
        data = json.loads(marker.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("verified") else None


def download(
    dataset: str | Dataset,
    directory: str | Path | None = None,
    *,
    force: bool = False,
    base_url: str | None = None,
    keep_archives: bool = False,
    retries: int = 3,
    retry_wait: float = 2.0,
    timeout: float = 60.0,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> Path:
    """Download, verify and unpack a dataset.

    Parameters
    ----------
    dataset
        A name from :data:`DATASETS` or a :class:`Dataset`.
    directory
        The parent folder; the dataset goes to ``directory/NAME`` (see :func:`data_dir`).
    force
        Download again even if a verified copy is there (its marker, archives and partial files
        are removed first; unpacked files are overwritten).
    base_url
        Replaces the folder part of every file's address (default: ``$REINFORCENS_DATASETS_URL``,
        else the official addresses).
    keep_archives
        Keep the downloaded archives after unpacking (they are deleted by default).
    retries
        Attempts per file; each retry resumes from the bytes already received.
    retry_wait
        Seconds to wait before the first retry (doubling, at most 30).
    timeout
        Seconds to wait for the server on each read.
    progress
        Show a progress bar.
    log
        Receives one-line status messages (default: print to stderr).

    Returns
    -------
    pathlib.Path
        The dataset folder ``directory/NAME``.

    Raises
    ------
    DownloadError
        For an unknown or manual-only dataset, a network failure (the partial file is kept, so a
        second call resumes), a size or checksum mismatch (the bad file is deleted) or a broken
        archive.
    """
    info = dataset if isinstance(dataset, Dataset) else get_dataset(dataset)
    say = log or (lambda msg: print(msg, file=sys.stderr))
    target = data_dir(directory) / info.name
    if not info.files:
        raise DownloadError(
            f"{info.name} cannot be downloaded automatically. {info.manual or ''} "
            f"Homepage: {info.homepage}. Put it in {target} and read it with --format "
            f"{info.format}."
        )
    existing = read_marker(target)
    if existing is not None and not force:
        say(f"{info.name} is already downloaded and verified in {target} (use --force to download it again)")
        return target
    if force and target.exists():
        (target / MARKER).unlink(missing_ok=True)
        for remote in info.files:  # fetch afresh, not from an earlier archive or partial file
            (target / remote.filename).unlink(missing_ok=True)
            (target / (remote.filename + ".part")).unlink(missing_ok=True)
    target.mkdir(parents=True, exist_ok=True)
    base = base_url if base_url is not None else os.environ.get(ENV_BASE_URL) or None
    records = []
    for remote in info.files:
        url = remote.url if base is None else base.rstrip("/") + "/" + remote.filename
        archive = target / remote.filename
        digest = _fetch(url, archive, remote, retries, retry_wait, timeout, progress, say)
        if remote.sha256 is None and remote.md5 is None:
            say(
                f"no published checksum for {remote.filename}; its SHA-256 is {digest} "
                f"(recorded in {target / MARKER})"
            )
        if remote.unpack and _is_archive(archive):
            _unpack(archive, target)
            if not keep_archives:
                archive.unlink()
        records.append(
            {
                "file": remote.filename,
                "url": url,
                "sha256": digest,
                "checksum_known": remote.sha256 is not None or remote.md5 is not None,
            }
        )
    marker = {
        "dataset": info.name,
        "format": info.format,
        "verified": True,
        "downloaded_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "files": records,
    }
    atomic_write_json(target / MARKER, marker, sort_keys=False)
    return target


def _fetch(
    url: str,
    dest: Path,
    remote: RemoteFile,
    retries: int,
    retry_wait: float,
    timeout: float,
    progress: bool,
    say: Callable[[str], None],
) -> str:
    """Download ``url`` to ``dest`` (via ``dest.part``), verify it and return its SHA-256."""
    part = dest.with_name(dest.name + ".part")
    if dest.exists() and not part.exists():
        dest.replace(part)  # an earlier, unverified copy: check it again (and resume if short)
    attempts = max(1, retries)
    for attempt in range(1, attempts + 1):
        try:
            _transfer(url, part, timeout, progress, remote.size)
            break
        except _Interrupted as exc:
            if attempt == attempts:
                raise DownloadError(
                    f"{exc}; the partial file {part} is kept: run the same command again to resume"
                ) from None
            say(f"{exc}; resuming (retry {attempt} of {attempts - 1})")
            time.sleep(min(retry_wait * 2 ** (attempt - 1), 30.0))
    size = part.stat().st_size
    if remote.size is not None and size != remote.size:
        part.unlink()
        raise DownloadError(
            f"{remote.filename}: got {size} bytes, expected {remote.size}; the file was deleted"
        )
    digest, md5 = _digests(part)
    for name, got, expected in (("SHA-256", digest, remote.sha256), ("MD5", md5, remote.md5)):
        if expected is not None and got != expected.lower():
            part.unlink()
            raise DownloadError(
                f"{remote.filename}: checksum mismatch ({name} {got}, expected {expected}); "
                f"the file was deleted, nothing was marked as downloaded"
            )
    part.replace(dest)
    return digest


class _Interrupted(Exception):
    """A transfer that stopped early (the partial file is kept)."""


def _transfer(url: str, part: Path, timeout: float, progress: bool, expected: int | None) -> None:
    """Append the rest of ``url`` to ``part``, raising :class:`_Interrupted` if it stops early."""
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "reinforcens-downloader"})
    if have:
        request.add_header("Range", f"bytes={have}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # nothing left to send: the part file is complete
            return
        if exc.code >= 500 or exc.code == 429:
            raise _Interrupted(f"{url}: HTTP {exc.code} {exc.reason}") from None
        raise DownloadError(f"{url}: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError, HTTPException) as exc:
        reason = getattr(exc, "reason", exc)
        raise _Interrupted(f"{url}: cannot connect ({reason})") from None
    with response:
        status = getattr(response, "status", 200)
        length = response.headers.get("Content-Length")
        if have and status == 206:
            mode, start = "ab", have
        else:
            mode, start = "wb", 0  # the server ignored the range: start over
        total = start + int(length) if length is not None and length.isdigit() else expected
        received = start
        bar = tqdm(
            total=total,
            initial=start,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            desc=part.name.removesuffix(".part"),
            disable=not progress,
            leave=False,
        )
        try:
            with open(part, mode) as out:
                while True:
                    try:
                        chunk = response.read(CHUNK)
                    except (OSError, HTTPException) as exc:
                        raise _Interrupted(f"{url}: transfer broken after {received} bytes ({exc})") from None
                    if not chunk:
                        break
                    out.write(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
        finally:
            bar.close()
        if total is not None and received < total:
            raise _Interrupted(f"{url}: transfer broken after {received} of {total} bytes")


def _digests(path: Path) -> tuple[str, str]:
    """The SHA-256 and the MD5 of a file, in one read."""
    sha, md5 = hashlib.sha256(), hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            sha.update(block)
            md5.update(block)
    return sha.hexdigest(), md5.hexdigest()


def _is_archive(path: Path) -> bool:
    name = path.name.lower()
    return name.endswith((".zip", ".tar.gz", ".tgz", ".tar"))


def _stem(name: str) -> str:
    for suffix in (".tar.gz", ".tgz", ".zip", ".tar"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def _top_folder(names: list[str]) -> bool:
    """Whether every member lies in one top-level folder (macOS debris aside)."""
    tops = {n.strip("/").split("/", 1)[0] for n in names if n.strip("/")} - {"__MACOSX"}
    nested = any("/" in n.strip("/") for n in names)
    return len(tops) == 1 and nested


def _unpack(archive: Path, target: Path) -> Path:
    """Unpack into ``target`` (into ``target/STEM`` unless the archive has one top-level folder),
    refusing members that would land outside it. Returns the folder unpacked into."""
    root = target.resolve()
    try:
        if archive.name.lower().endswith(".zip"):
            with zipfile.ZipFile(archive) as zf:
                names = zf.namelist()
                dest = target if _top_folder(names) else target / _stem(archive.name)
                for member in names:
                    if not (dest.resolve() / member).resolve().is_relative_to(root):
                        raise DownloadError(f"{archive.name}: unsafe path {member!r} in archive")
                zf.extractall(dest)
        else:
            with tarfile.open(archive) as tf:
                members = tf.getmembers()
                dest = target if _top_folder([m.name for m in members]) else target / _stem(archive.name)
                if hasattr(tarfile, "data_filter"):
                    tf.extractall(dest, filter="data")
                else:  # Python < 3.11.4: check the members by hand
                    for member in members:
                        inside = (dest.resolve() / member.name).resolve().is_relative_to(root)
                        if not inside or member.issym() or member.islnk() or member.isdev():
                            raise DownloadError(f"{archive.name}: unsafe member {member.name!r}")
                    tf.extractall(dest)
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError) as exc:  # incl. FilterError
        raise DownloadError(f"{archive.name}: cannot unpack ({exc})") from None
    return dest


__all__ = [
    "DATASETS",
    "ENV_BASE_URL",
    "ENV_DATA_DIR",
    "MARKER",
    "Dataset",
    "DownloadError",
    "RemoteFile",
    "data_dir",
    "download",
    "get_dataset",
    "read_marker",
]
