"""Fetch a list of remote files into a cache folder: parallel, resumable, verified.

    files = [RemoteFile(url, cache / "a.json", size=1234, sha256="9f...")]
    report = fetch_files(files, source=Source("HELM", base_url, manual="gcloud ..."), jobs=4)
    report.n_downloaded, report.n_cached, report.bytes_downloaded

- A file already in the cache is not fetched again: it only ever appears under its final
  name complete and verified (written to a temp file beside it, checked, then renamed), so
  a killed or failed run leaves no half file that a later run could mistake for a whole one.
  A temp file is locked (``flock``) while written: the next fetch of that file removes the
  temp files a killed run left (unlocked), not those of a run still going.
- At most ``jobs`` downloads run at once (a thread pool: the work is waiting on sockets).
- What the source publishes is checked: the size (the listing's, else ``Content-Length``),
  the SHA-256 (Hub LFS files), the git blob SHA-1 (Hub files kept in git) and the MD5 of
  ``x-goog-hash`` (Google Cloud Storage objects served untransformed). A body cut short
  is an error even where no size is published (a chunked answer that ends early).
- Any failure (unreachable source, HTTP error, short read, checksum mismatch, a cache that
  cannot be written) is one :class:`~lm_router_plugin.errors.InputError` naming the URL or
  the path and the way round; files that were completed before it stay in the cache, so
  running the command again resumes.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import http.client
import json
import logging
import os
import tempfile
import threading
import urllib.error
import urllib.request
from collections.abc import Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from ..errors import InputError
from ..progress import progress_bar

logger = logging.getLogger(__name__)

CHUNK = 1 << 20  # bytes per read: the progress bar moves at least once per MiB
TIMEOUT_S = 60.0  # per socket operation (connect, each read), not per file
DEFAULT_JOBS = 4


def _user_agent() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"lm-router-plugin/{version('lm-router-plugin')}"
    except PackageNotFoundError:  # pragma: no cover - not installed as a distribution
        return "lm-router-plugin"


@dataclass(frozen=True)
class Source:
    """Where files come from, for error messages: a name, its base URL and the manual route
    (the commands that do the same download by hand, then the ingest)."""

    name: str
    url: str
    manual: str
    denied: str = ""  # what to do on HTTP 401/403 (e.g. a gated dataset's terms and a token)


@dataclass(frozen=True)
class RemoteFile:
    """One file to fetch into ``dest`` and what the source publishes about it."""

    url: str
    dest: Path
    size: int | None = None  # bytes, from the source's listing
    sha256: str | None = None  # hex digest (Hub LFS files)
    git_sha1: str | None = None  # git blob id: sha1(b"blob <size>\0" + bytes) (Hub git files)
    headers: tuple[tuple[str, str], ...] = ()  # sent to this host only, never on a redirect
    manual: str = ""  # this file's manual route, where it is not the source's (one model's)


@dataclass
class FetchReport:
    """What :func:`fetch_files` did."""

    n_files: int = 0
    n_cached: int = 0  # already complete in the cache: not fetched
    n_downloaded: int = 0
    bytes_downloaded: int = 0
    urls: list[str] = field(default_factory=list)  # the URLs fetched (not the cached ones)


class _Cancelled(Exception):
    """Another download failed (or the user pressed Ctrl-C): stop this one now."""


@dataclass
class _Shared:
    """What the download threads share: the bar (updated under ``lock``) and a stop flag."""

    source: Source
    bar: Any
    n_files: int
    n_done: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    stop: threading.Event = field(default_factory=threading.Event)

    def advance(self, n: int) -> None:
        with self.lock:
            self.bar.update(n)

    def file_done(self) -> None:
        with self.lock:  # sizes may be known only per response: the file count is the truth
            self.n_done += 1
            self.bar.set_postfix_str(f"{self.n_done}/{self.n_files} files")


class _Unreachable(Exception):
    """The connection failed before any HTTP status (DNS, refused, timeout, offline)."""


def open_url(url: str, headers: Sequence[tuple[str, str]] = (),
             timeout: float = TIMEOUT_S) -> Any:
    """``urllib`` GET of ``url``; the response (a file-like object with ``.headers``).

    ``headers`` (e.g. an ``Authorization`` token) go to this URL's host only: urllib drops
    "unredirected" headers when it follows a redirect to a CDN.

    Raises:
        urllib.error.HTTPError: the server answered with an error status.
        _Unreachable: no answer at all.
    """
    request = urllib.request.Request(url, headers={"User-Agent": _user_agent()})
    for key, value in headers:
        request.add_unredirected_header(key, value)
    try:
        return urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError:
        raise
    except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise _Unreachable(f"{type(reason).__name__}: {reason}") from exc


def unreachable_error(source: Source, url: str, why: str, manual: str = "") -> InputError:
    """The one error for a source that does not answer: names it and the manual route
    (``manual``, else the source's)."""
    return InputError(url, f"cannot reach {source.name} ({why}); no network, or the "
                           f"address is wrong (it is set by {source.url})",
                      hint=f"nothing was ingested; to do it by hand: {manual or source.manual}")


def http_error(source: Source, url: str, exc: urllib.error.HTTPError, what: str,
               manual: str = "") -> InputError:
    denied = f"{source.denied}; " if source.denied and exc.code in (401, 403) else ""
    return InputError(url, f"{source.name} answered HTTP {exc.code} {exc.reason} for {what}",
                      hint=f"{denied}nothing was ingested; to do it by hand: "
                           f"{manual or source.manual}")


def interrupted_error(url: str, n: int, exc: BaseException, manual: str) -> InputError:
    """A body that ended or broke before it was whole (reset, timeout, a cut chunked answer)."""
    return InputError(url, f"download interrupted after {n} bytes ({type(exc).__name__}: "
                           f"{exc})",
                      hint="nothing was ingested; run the command again to fetch the missing "
                           f"files; by hand: {manual}")


def cache_error(path: Path, exc: OSError) -> InputError:
    """The download cache cannot be written (disk full, quota, not a folder, permissions)."""
    return InputError(path, f"cannot write the download cache ({exc.strerror or exc})",
                      hint="free some space or fix the folder's permissions, or choose another "
                           "cache folder with --cache-dir (or $LM_ROUTER_CACHE_DIR)")


def fetch_json(url: str, source: Source, what: str, headers: Sequence[tuple[str, str]] = ()
               ) -> tuple[Any, Any]:
    """GET ``url`` and parse its JSON body: (value, response headers).

    Raises:
        urllib.error.HTTPError: an error status (the caller says what it means there).
        InputError: the source unreachable, the body cut short, or not JSON.
    """
    try:
        with open_url(url, headers) as response:
            data, answer_headers = response.read(), response.headers
    except _Unreachable as exc:
        raise unreachable_error(source, url, str(exc)) from exc
    except (http.client.HTTPException, OSError) as exc:  # cut mid-body, reset, timeout
        if isinstance(exc, urllib.error.HTTPError):
            raise
        raise interrupted_error(url, len(getattr(exc, "partial", b"") or b""), exc,
                                source.manual) from exc
    try:
        return json.loads(data), answer_headers
    except ValueError as exc:  # a proxy's or captive portal's HTML page
        raise InputError(url, f"{what}: not valid JSON ({exc})",
                         hint=f"is {source.url} {source.name}?") from exc


def write_cache_text(path: Path, text: str) -> None:
    """Write a listing into the cache atomically; a cache that cannot be written is one
    error naming it."""
    from ..store.store import atomic_write_text

    try:
        atomic_write_text(path, text)
    except OSError as exc:
        raise cache_error(path, exc) from exc


def read_saved_json(path: Path) -> Any | None:
    """A listing saved by an earlier pull, or None when it is missing or damaged (an
    interrupted write of an older version, a disk error): then it is fetched again."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        logger.warning("%s: saved listing unreadable (%s); ignored", path, exc)
        return None


def _gcs_md5(headers: Any) -> str | None:
    """The base64 MD5 of ``x-goog-hash`` when the body is the stored object as is (no
    decompressive transcoding, which would change the bytes but not the header)."""
    if headers.get("Content-Encoding") or headers.get("x-goog-stored-content-encoding",
                                                      "identity") != "identity":
        return None
    for value in headers.get_all("x-goog-hash") or []:
        for part in value.split(","):
            key, _, digest = part.strip().partition("=")
            if key == "md5" and digest:
                return digest.strip()
    return None


def _fetch_one(item: RemoteFile, shared: _Shared) -> int:
    """Download ``item`` to a temp file beside ``item.dest``, verify, rename; bytes read."""
    source = shared.source
    if shared.stop.is_set():
        raise _Cancelled
    try:
        response = open_url(item.url, item.headers)
    except urllib.error.HTTPError as exc:
        raise http_error(source, item.url, exc, "a file of its own listing", item.manual) from exc
    except _Unreachable as exc:
        raise unreachable_error(source, item.url, str(exc), item.manual) from exc
    try:
        with response:
            return _receive(item, response, shared)
    except OSError as exc:  # the cache's side: reading errors are InputErrors by now
        raise cache_error(item.dest, exc) from exc


def _receive(item: RemoteFile, response: Any, shared: _Shared) -> int:
    """Stream ``response`` into a locked temp file beside ``item.dest``, verify, rename."""
    length = response.headers.get("Content-Length")
    announced = int(length) if length and length.isdigit() and not response.headers.get(
        "Content-Encoding") else None
    expected = item.size if item.size is not None else announced
    if item.size is None and announced is not None:
        with shared.lock:  # the size is known only now: grow the bar's total
            shared.bar.total = (shared.bar.total or 0) + announced
            shared.bar.refresh()
    md5_b64 = _gcs_md5(response.headers)
    hashes = {"sha256": hashlib.sha256() if item.sha256 else None,
              "md5": hashlib.md5() if md5_b64 else None,
              "git": hashlib.sha1() if item.git_sha1 else None}
    if hashes["git"] is not None:
        hashes["git"].update(b"blob %d\0" % (expected if expected is not None else 0))
    item.dest.parent.mkdir(parents=True, exist_ok=True)
    _remove_dead_parts(item.dest)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{item.dest.name}.", suffix=".part",
                                    dir=item.dest.parent)
    tmp = Path(tmp_name)
    n = 0
    try:  # locked until renamed, so that no other run takes it for a killed run's
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # (a new file: never held)
        with os.fdopen(fd, "wb", closefd=False) as out:
            n = _copy(response, out, hashes, item, shared)
        problem = _check(item, n, expected, announced, hashes, md5_b64)
        if problem:
            raise InputError(item.url, problem, hint="nothing was ingested; files already "
                             "complete stay in the cache: run the command again to fetch "
                             "the rest")
        os.replace(tmp, item.dest)
        shared.file_done()
    finally:
        os.close(fd)
        if tmp.exists():
            tmp.unlink()
    return n


def _remove_dead_parts(dest: Path) -> None:
    """Remove the temp files of ``dest`` that no running download holds (a killed run's)."""
    for part in dest.parent.glob(f".{dest.name}.*.part"):
        try:
            fd = os.open(part, os.O_RDWR)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # locked: another download of this file is still going
            os.close(fd)
            continue
        try:
            part.unlink()
            logger.info("%s: removed the temp file of an interrupted download", part)
        except OSError:
            pass
        finally:
            os.close(fd)


def _copy(response: Any, out: BinaryIO, hashes: dict[str, Any], item: RemoteFile,
          shared: _Shared) -> int:
    n = 0
    while True:
        if shared.stop.is_set():
            raise _Cancelled
        try:
            chunk = response.read(CHUNK)
        except (OSError, http.client.HTTPException) as exc:
            # reset, timeout, or the body ended early (IncompleteRead: before Content-Length,
            # or a chunked answer without its last chunk, where no size says it was short)
            raise interrupted_error(item.url, n + len(getattr(exc, "partial", b"") or b""),
                                    exc, item.manual or shared.source.manual) from exc
        if not chunk:
            return n
        _write(out, chunk, hashes)
        n += len(chunk)
        shared.advance(len(chunk))


def _write(out: BinaryIO, chunk: bytes, hashes: dict[str, Any]) -> None:
    out.write(chunk)
    for digest in hashes.values():
        if digest is not None:
            digest.update(chunk)


def _check(item: RemoteFile, n: int, expected: int | None, announced: int | None,
           hashes: dict[str, Any], md5_b64: str | None) -> str | None:
    """Why the downloaded bytes are not the published file, or None."""
    for name, size in (("the listing", item.size), ("Content-Length", announced)):
        if size is not None and n != size:
            return (f"incomplete download: {n} of {size} bytes (size from {name}); "
                    "the connection was cut or the file changed on the server")
    if item.sha256 and hashes["sha256"].hexdigest() != item.sha256.lower():
        return f"SHA-256 mismatch: got {hashes['sha256'].hexdigest()}, published {item.sha256}"
    if item.git_sha1 and expected is not None and hashes["git"].hexdigest() != item.git_sha1:
        return (f"git blob SHA-1 mismatch: got {hashes['git'].hexdigest()}, published "
                f"{item.git_sha1}")
    if md5_b64:
        got = base64.b64encode(hashes["md5"].digest()).decode()
        if got != md5_b64:
            return f"MD5 mismatch: got {got}, x-goog-hash says {md5_b64}"
    return None


def is_cached(item: RemoteFile) -> bool:
    """True when ``item.dest`` holds the published file: it exists (only a complete,
    verified download is ever renamed to it) and matches the size and SHA-256 the listing
    gives now, which catches a file that changed on the source since (the Hub's ``latest``
    Parquet split is rewritten when a model is re-run)."""
    try:
        size = item.dest.stat().st_size
    except OSError:
        return False
    if item.size is not None and size != item.size:
        return False
    if item.sha256:
        digest = hashlib.sha256()
        with open(item.dest, "rb") as fh:
            while chunk := fh.read(CHUNK):
                digest.update(chunk)
        return digest.hexdigest() == item.sha256.lower()
    if item.git_sha1:
        digest = hashlib.sha1(b"blob %d\0" % size)
        digest.update(item.dest.read_bytes())
        return digest.hexdigest() == item.git_sha1
    return True


def fetch_files(files: Sequence[RemoteFile], *, source: Source, jobs: int = DEFAULT_JOBS,
                desc: str = "downloading", offline: str = "") -> FetchReport:
    """Fetch the files missing from the cache, ``jobs`` at a time, with one progress bar.
    ``offline``: why nothing may be requested (e.g. "HF_HUB_OFFLINE is set"); then a file
    missing from the cache is an error instead of a download.

    Raises:
        InputError: the first failure (unreachable, HTTP error, short read, checksum, a cache
            that cannot be written); the remaining downloads are cancelled, completed files
            stay in the cache. Offline: the first file not in the cache.
        ValueError: ``jobs`` < 1.
    """
    if jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs}")
    report = FetchReport(n_files=len(files))
    todo = [f for f in files if not is_cached(f)]
    report.n_cached = len(files) - len(todo)
    if todo and offline:
        raise InputError(todo[0].dest, f"not in the download cache, and {offline} ({len(todo)} "
                                       f"of {len(files)} file(s) missing, e.g. {todo[0].url})",
                         hint="nothing was ingested; pull once with network access, or by "
                              f"hand: {todo[0].manual or source.manual}")
    if not todo:
        logger.info("%s: all %d file(s) already in the cache; nothing to download",
                    source.name, len(files))
        return report
    sizes = [f.size for f in todo]
    total = sum(s for s in sizes if s is not None) if any(s is not None for s in sizes) else None
    logger.info("%s: %d file(s) to download%s, %d already in the cache", source.name, len(todo),
                f" ({total / 1e6:.1f} MB)" if total is not None and None not in sizes else "",
                report.n_cached)
    with progress_bar(total=total, desc=desc, unit="B", unit_scale=True,
                      unit_divisor=1024) as bar:
        shared = _Shared(source, bar, len(todo))
        pool = ThreadPoolExecutor(max_workers=min(jobs, len(todo)),
                                  thread_name_prefix="lm-router-pull")
        futures: dict[Any, RemoteFile] = {}
        try:
            futures = {pool.submit(_fetch_one, f, shared): f for f in todo}
            done, _ = wait(futures, return_when=FIRST_EXCEPTION)
            failed = [fut for fut in done if fut.exception() is not None]
            if failed:
                first = min(failed, key=lambda fut: todo.index(futures[fut]))
                raise first.exception()  # type: ignore[misc]
        except BaseException:  # a failure or Ctrl-C: the other downloads stop at their next chunk
            shared.stop.set()
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
    for fut, item in futures.items():
        report.bytes_downloaded += fut.result()
        report.n_downloaded += 1
        report.urls.append(item.url)
    return report


__all__ = ["DEFAULT_JOBS", "FetchReport", "RemoteFile", "Source", "cache_error", "fetch_files",
           "fetch_json", "is_cached", "open_url", "read_saved_json", "write_cache_text"]
