"""`lm-router pull` against a local HTTP server that replays the two public layouts.

- HELM: a ``crfm-helm-public`` bucket (``<project>/benchmark_output/releases/<release>/
  runs_to_run_suites.json`` and ``runs/<suite version>/<run>/*.json``, GCS's ``x-goog-hash``
  MD5 header) built from the real HELM run folders of tests/data/helm (written by helm-run),
  plus the HELM website's ``project_metadata.json``.
- The Hub: the Open LLM Leaderboard's ``open-llm-leaderboard/<org>__<model>-details``
  datasets (``main``: ``<org>__<model>/samples_<task>_<date>.jsonl`` + ``results_<date>.json``
  of two runs; ``refs/convert/parquet``: ``<config>/<split>/0000.parquet``) built from the
  lm-eval sample logs of examples/runs, served through the Hub's tree API (paginated, with
  sizes, git blob ids and LFS SHA-256), its dataset search and ``resolve`` URLs.
"""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import TESTS, one_error
from test_hub_parquet_layout import STAMP, hub_tree
from test_published_layout import DEFAULT_KEY, EXAMPLES

from lm_router_plugin.store.store import Store

HELM_RUNS = TESTS / "data" / "helm" / "fixture-suite"
OLD_DATE = "2025-01-01T00-00-00.000000"  # an older run in the details datasets: never read
PAGE = 7  # tree entries per page: the client must follow the Link header


@pytest.fixture(autouse=True)
def _one_reader(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LM_ROUTER_WORKERS", "1")  # ingest in-process: small inputs
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HUB_DISABLE_IMPLICIT_TOKEN", "1")


# -- the server --------------------------------------------------------------------------
class Replay(ThreadingHTTPServer):
    """Serves ``root``: ``gcs/`` as the bucket, ``www/`` as the HELM website, ``hub/<org>/
    <name>/<quoted revision>/`` as Hub datasets. ``damage`` maps a URL path suffix to
    "truncate" (announce the full Content-Length, send half), "corrupt" (same length, other
    bytes), "chunked-cut" (a chunked answer with no size, cut in the middle) or "error"
    (HTTP 500)."""

    daemon_threads = True

    def __init__(self, root: Path):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.root = root
        self.requests: list[str] = []
        self.damage: dict[str, str] = {}
        self.redirect = False  # send `resolve` to /cdn/... (as the Hub sends LFS files away)
        self.html_api = False  # answer the API with 200 and an HTML page (a captive portal)
        self.cut_api = False  # announce the API answer's full length, send half, close
        self.auth: dict[str, list[str | None]] = {"api": [], "resolve": [], "cdn": []}

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def files_fetched(self) -> list[str]:
        return [p for p in self.requests if "/resolve/" in p or "/runs/" in p]


class _Handler(BaseHTTPRequestHandler):
    server: Replay

    def log_message(self, *args: Any) -> None:  # quiet
        pass

    def do_GET(self) -> None:
        self.server.requests.append(self.path)
        url = urlsplit(self.path)
        path = unquote(url.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        if path.startswith("/api/"):
            self.server.auth["api"].append(self.headers.get("Authorization"))
            if self.server.html_api:
                body = b"<html><body>Sign in to the network</body></html>"
                self.send_response(200)
                self.send_header("Content-Type", "text/html")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                return None
        if path.startswith("/crfm-helm-public/"):
            return self._file(self.server.root / "gcs" / path[1:], gcs=True)
        if path.startswith("/helm/"):
            return self._file(self.server.root / "www" / path[1:])
        if path == "/api/datasets":
            return self._search(query)
        if path.startswith("/api/datasets/"):
            return self._tree(path[len("/api/datasets/"):], url.path, query)
        if path.startswith("/cdn/"):  # another host in real life: must get no token
            self.server.auth["cdn"].append(self.headers.get("Authorization"))
            self.path = self.path[len("/cdn"):]
            path = path[len("/cdn"):]
            url = urlsplit(self.path)
        elif path.startswith("/datasets/"):
            self.server.auth["resolve"].append(self.headers.get("Authorization"))
            if self.server.redirect:
                self.send_response(302)
                self.send_header("Location", f"{self.server.url}/cdn{self.path}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return None
        if path.startswith("/datasets/"):
            org, name, resolve, _ = path[len("/datasets/"):].split("/", 3)
            assert resolve == "resolve"
            # the revision is one quoted segment (refs%2Fconvert%2Fparquet)
            raw = url.path.split("/resolve/", 1)[1]
            rev, _, file_path = raw.partition("/")
            return self._file(self.server.root / "hub" / org / name / quote(unquote(rev), safe="")
                              / unquote(file_path))
        self._error(404, "")

    def _error(self, status: int, code: str) -> None:
        body = json.dumps({"error": code or "not found"}).encode()
        self.send_response(status)
        if code:
            self.send_header("X-Error-Code", code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _json(self, data: Any, headers: dict[str, str] | None = None) -> None:
        body = json.dumps(data).encode()
        self.send_response(200)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.server.cut_api:
            body = body[: len(body) // 2]
            self.close_connection = True
        self.wfile.write(body)

    def _file(self, file: Path, gcs: bool = False) -> None:
        if not file.is_file():
            return self._error(404, "EntryNotFound" if not gcs else "")
        data = file.read_bytes()
        damage = next((how for suffix, how in self.server.damage.items()
                       if self.path.endswith(suffix)), None)
        if damage == "error":
            return self._error(500, "")
        if damage == "chunked-cut":  # GCS transcoding a gzip-stored object: no size, no MD5
            self.protocol_version = "HTTP/1.1"
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.send_header("x-goog-stored-content-encoding", "gzip")
            self.end_headers()
            half = data[: len(data) // 2]
            self.wfile.write(b"%x\r\n" % len(half) + half + b"\r\n")  # no last chunk
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return None
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        if gcs:  # as storage.googleapis.com does for objects stored without transcoding
            md5 = base64.b64encode(hashlib.md5(data).digest()).decode()
            self.send_header("x-goog-hash", "crc32c=AAAAAA==")
            self.send_header("x-goog-hash", f"md5={md5}")
        self.end_headers()
        if damage == "truncate":
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        if damage == "corrupt":
            data = bytes([data[0] ^ 1]) + data[1:]
        self.wfile.write(data)

    def _search(self, query: dict[str, str]) -> None:
        hub = self.server.root / "hub"
        author, text = query.get("author", ""), query.get("search", "")
        ids = [f"{author}/{d.name}" for d in sorted((hub / author).glob("*")) if text in d.name]
        self._json([{"id": i} for i in ids])

    def _tree(self, rest: str, raw_path: str, query: dict[str, str]) -> None:
        org, name, tree, _ = rest.split("/", 3)
        assert tree == "tree"
        raw = raw_path.split("/tree/", 1)[1]
        rev, _, sub = raw.partition("/")
        repo = self.server.root / "hub" / org / name
        if not repo.is_dir():  # the Hub answers anonymous callers 401 for a missing repo
            return self._error(401, "RepoNotFound")
        base = repo / quote(unquote(rev), safe="")
        if not base.is_dir():
            return self._error(404, "RevisionNotFound")
        top = base / unquote(sub) if sub else base
        if not top.exists():
            return self._error(404, "EntryNotFound")
        entries = []
        for file in sorted(p for p in top.rglob("*") if p.is_file()):
            data = file.read_bytes()
            entry = {"type": "file", "path": file.relative_to(base).as_posix(),
                     "size": len(data),
                     "oid": hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()}
            if file.suffix in (".jsonl", ".parquet"):  # stored with LFS, as on the Hub
                entry["lfs"] = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data),
                                "pointerSize": 134}
            entries.append(entry)
        start = int(query.get("cursor", 0))
        headers = {}
        if start + PAGE < len(entries):
            headers["Link"] = (f'<{self.server.url}{raw_path}?recursive=true&expand=false&'
                               f'cursor={start + PAGE}>; rel="next"')
        self._json(entries[start:start + PAGE], headers)


@pytest.fixture
def server(tmp_path: Path):
    srv = Replay(tmp_path / "remote")
    thread = threading.Thread(target=srv.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


# -- the layouts -------------------------------------------------------------------------
HELM_SUITES = {"simple_classification": "v1.0.0", "simple_mcqa": "v1.1.0"}  # run -> version


def helm_bucket(root: Path) -> dict[str, str]:
    """``lite`` release v1.1.0 of the fixture runs, over two suite versions (as real releases
    are); the website's project list. Returns {run name: suite version}."""
    out = root / "gcs" / "crfm-helm-public" / "lite" / "benchmark_output"
    mapping = {}
    for run in sorted(HELM_RUNS.iterdir()):
        name = json.loads((run / "run_spec.json").read_text())["name"]
        assert name == run.name  # helm-run names the folder after the run spec
        version = HELM_SUITES[name.split(":")[0].split(",")[0]]
        mapping[name] = version
        shutil.copytree(run, out / "runs" / version / name)
    release = out / "releases" / "v1.1.0"
    release.mkdir(parents=True)
    (release / "runs_to_run_suites.json").write_text(json.dumps(mapping, indent=2))
    (release / "summary.json").write_text(json.dumps({"release": "v1.1.0",
                                                      "suites": ["v1.0.0", "v1.1.0"]}))
    www = root / "www" / "helm"
    www.mkdir(parents=True)
    (www / "project_metadata.json").write_text(json.dumps([
        {"title": "Lite", "id": "lite", "releases": ["v1.1.0", "v1.0.0"]},
        {"title": "Classic", "id": "classic", "releases": ["v0.4.0"]}]))
    return mapping


def _older(line: str) -> str:
    """A sample line of an older run: every 0/1 score flipped, so reading it would show."""
    rec = json.loads(line)
    for key in ("acc", "acc_norm", "exact_match"):
        if isinstance(rec.get(key), (int, float)):
            rec[key] = 1 - rec[key]
    return json.dumps(rec)


def details_datasets(root: Path, models: tuple[str, ...] = ("toy__tiny-1b", "toy__math-whiz-7b",
                                                            "toy__geo-buff-7b")) -> None:
    """One details dataset per model folder of examples/runs: ``main`` with the run lm-eval
    wrote plus an older run, ``refs/convert/parquet`` with the Hub's conversion."""
    for folder in models:
        repo = root / "hub" / "open-llm-leaderboard" / f"{folder}-details"
        main = repo / "main" / folder
        main.mkdir(parents=True)
        for src in sorted((EXAMPLES / folder).iterdir()):
            shutil.copy(src, main / src.name)
            date = src.stem[-26:]
            old = main / src.name.replace(date, OLD_DATE)
            lines = src.read_text().splitlines()
            old.write_text("\n".join(map(_older, lines)) + "\n" if src.suffix == ".jsonl"
                           else src.read_text().replace(date, OLD_DATE))
        (repo / "main" / "README.md").write_text("---\nconfigs: []\n---\n")
        converted = hub_tree(EXAMPLES, repo / quote("refs/convert/parquet", safe=""),
                             splits=(STAMP, "latest"), models=(folder,))
        results = converted / f"{folder}__results" / "latest"  # aggregated scores: not pulled
        results.mkdir(parents=True)
        pq.write_table(pa.table({"results": ['{"toy_arith": {"acc,none": 0.5}}']}),
                       results / "0000.parquet")


def _table(store: Path, drop: tuple[str, ...] = ("origin",)) -> pd.DataFrame:
    table = pd.read_parquet(Store(store).table_path).drop(columns=list(drop))
    return table.sort_values(["model", "task", "instance_id"]).reset_index(drop=True)


def _accuracy(cli, store: Path) -> dict:
    result = cli("info", "--json", store_dir=store)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)["accuracy"]


def _no_partial_files(cache: Path) -> None:
    assert not [p for p in cache.rglob("*.part")], "a temp file was left behind"


# -- HELM --------------------------------------------------------------------------------
def test_helm_release_is_pulled_ingested_and_resumed(cli, server: Replay,
                                                     tmp_path: Path) -> None:
    mapping = helm_bucket(server.root)
    cache, store = tmp_path / "cache", tmp_path / "store"
    args = ["pull", "helm", "--suite", "lite", "--release", "v1.1.0", "--base-url",
            f"{server.url}/crfm-helm-public", "--cache-dir", cache, "--store", store,
            "--jobs", "3"]
    result = cli(*args)
    assert result.exit_code == 0, result.output
    assert "8 runs, 24 files: 24 downloaded" in result.stdout
    # exactly the three files the adapter reads, per run, from the run's suite version
    fetched = sorted(unquote(p) for p in server.files_fetched())
    assert len(fetched) == 24 and not any("stats.json" == Path(p).name for p in fetched)
    assert all(f"/runs/{mapping[Path(p).parent.name]}/" in p for p in fetched)
    # the same rows as `lm-router ingest helm` of the same files, and of the fixture itself
    direct = tmp_path / "direct"
    res = cli("ingest", "helm", cache / "helm" / "lite" / "benchmark_output" / "runs",
              store_dir=direct)
    assert res.exit_code == 0, res.output
    pd.testing.assert_frame_equal(_table(store), _table(direct))
    fixture = tmp_path / "fixture"
    assert cli("ingest", "helm", HELM_RUNS, store_dir=fixture).exit_code == 0
    pd.testing.assert_frame_equal(_table(store, ("origin", "benchmark")),
                                  _table(fixture, ("origin", "benchmark")))
    assert _accuracy(cli, store) == _accuracy(cli, fixture)
    assert set(_table(store).benchmark) == {"v1.0.0", "v1.1.0"}  # the suite versions
    # second run: nothing requested at all (the release's run list is kept too)
    before = len(server.requests)
    again = cli(*args)
    assert again.exit_code == 0, again.output
    assert len(server.requests) == before
    assert "0 downloaded (0.0 kB), 24 already in the cache" in again.stdout
    assert "0 added" in again.stdout
    _no_partial_files(cache)


def test_helm_runs_pattern_and_did_you_mean(cli, server: Replay, tmp_path: Path) -> None:
    helm_bucket(server.root)
    base = ["--base-url", f"{server.url}/crfm-helm-public", "--cache-dir", tmp_path / "cache"]
    store = tmp_path / "store"
    monkey_env = {"LM_ROUTER_HELM_PROJECTS_URL": f"{server.url}/helm/project_metadata.json"}
    with pytest.MonkeyPatch.context() as mp:
        for key, value in monkey_env.items():
            mp.setenv(key, value)
        result = cli("pull", "helm", "--suite", "lite", "--release", "v1.1.0", "--runs",
                     "simple_mcqa:model=*", "--runs", "simple_classification:model=mock_model-c",
                     *base, "--store", store)
        assert result.exit_code == 0, result.output
        assert "4 runs, 12 files" in result.stdout
        assert set(_table(store).model) == {"mock/model-b", "mock/model-c", "simple/model1"}
        for args, expected in [
            (["--suite", "lite", "--release", "v1.1.0", "--runs", "simple_mcq:model=mock_model-b"],
             ("no run 'simple_mcq:model=mock_model-b'; did you mean "
              "'simple_mcqa:model=mock_model-b'")),
            (["--suite", "lit", "--release", "v1.1.0"],
             "--suite: no HELM project 'lit'; did you mean 'lite'?"),
            (["--suite", "lite", "--release", "v1.1"],
             "--release: HELM lite has no release 'v1.1'; did you mean 'v1.1.0'"),
        ]:
            other = tmp_path / "other"
            res = cli("pull", "helm", *args, *base, "--store", other)
            assert res.exit_code == 2, res.output
            assert expected in res.output, res.output
            assert not other.exists()


def test_helm_unreachable_is_one_error_and_writes_nothing(cli, tmp_path: Path) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    store, cache = tmp_path / "store", tmp_path / "cache"
    message = one_error(cli("pull", "helm", "--suite", "lite", "--release", "v1.1.0",
                            "--base-url", f"http://127.0.0.1:{port}/crfm-helm-public",
                            "--cache-dir", cache, "--store", store))
    assert "cannot reach HELM's public bucket" in message
    assert "gcloud storage cp" in message and "lm-router ingest helm" in message
    assert not store.exists()
    assert not cache.exists() or not [p for p in cache.rglob("*") if p.is_file()]


@pytest.mark.parametrize(("damage", "problem"), [("truncate", "incomplete download"),
                                                  ("corrupt", "MD5 mismatch")])
def test_helm_damaged_download_is_detected_then_resumed(cli, server: Replay, tmp_path: Path,
                                                        damage: str, problem: str) -> None:
    helm_bucket(server.root)
    bad = "simple_mcqa%3Amodel%3Dmock_model-c/scenario_state.json"
    server.damage[bad] = damage
    store, cache = tmp_path / "store", tmp_path / "cache"
    args = ["pull", "helm", "--suite", "lite", "--release", "v1.1.0", "--base-url",
            f"{server.url}/crfm-helm-public", "--cache-dir", cache, "--store", store]
    message = one_error(cli(*args))
    assert problem in message and bad.replace("%3A", ":").replace("%3D", "=") in unquote(message)
    assert not store.exists()  # nothing ingested
    _no_partial_files(cache)
    kept = [p for p in cache.rglob("*.json") if "/runs/" in p.as_posix()]
    assert not any(p.parent.name == "simple_mcqa:model=mock_model-c"
                   and p.name == "scenario_state.json" for p in kept)
    # the source is fixed: the next run fetches only what is missing
    del server.damage[bad]
    before = len(server.files_fetched())
    result = cli(*args)
    assert result.exit_code == 0, result.output
    assert len(server.files_fetched()) - before == 24 - len(kept)
    assert len(_table(store)) > 0


# -- Open LLM Leaderboard ----------------------------------------------------------------
def test_leaderboard_jsonl_is_pulled_ingested_and_resumed(cli, server: Replay,
                                                          tmp_path: Path) -> None:
    details_datasets(server.root)
    cache, store = tmp_path / "cache", tmp_path / "store"
    args = ["pull", "open-llm-leaderboard", "--models", "toy/tiny-1b,toy/math-whiz-7b",
            "--tasks", "toy_arith,toy_u*", "--endpoint", server.url, "--cache-dir", cache,
            "--store", store]
    result = cli(*args)
    assert result.exit_code == 0, result.output
    # per model: the newest run's two sample logs and its results file
    assert "4 (model, task) logs, 6 files: 6 downloaded" in result.stdout
    fetched = [unquote(p) for p in server.files_fetched()]
    assert not any(OLD_DATE in p for p in fetched) and len(fetched) == 6
    assert any("cursor=" in p for p in server.requests)  # the listing was paged
    # the same rows as `lm-router ingest lm-eval` of the files lm-eval wrote
    direct = tmp_path / "direct"
    sources = [p for m in ("toy__tiny-1b", "toy__math-whiz-7b") for t in ("toy_arith", "toy_units")
               for p in (EXAMPLES / m).glob(f"samples_{t}_*.jsonl")]
    assert cli("ingest", "lm-eval", *sources, store_dir=direct).exit_code == 0
    pd.testing.assert_frame_equal(_table(store), _table(direct))
    acc = _accuracy(cli, store)
    for folder in ("toy__tiny-1b", "toy__math-whiz-7b"):
        (results,) = (EXAMPLES / folder).glob("results_*.json")
        data = json.loads(results.read_text())
        for task in ("toy_arith", "toy_units"):
            assert acc[task][data["model_name"]] == pytest.approx(
                data["results"][task][DEFAULT_KEY[task]], abs=1e-12)
    # second run: only the (paged) listings, no file
    before = len(server.files_fetched())
    again = cli(*args)
    assert again.exit_code == 0, again.output
    assert len(server.files_fetched()) == before
    assert "0 downloaded (0.0 kB), 6 already in the cache" in again.stdout
    _no_partial_files(cache)


def test_leaderboard_parquet_conversion(cli, server: Replay, tmp_path: Path) -> None:
    details_datasets(server.root, models=("toy__geo-buff-7b",))
    cache, store = tmp_path / "cache", tmp_path / "store"
    result = cli("pull", "open-llm-leaderboard", "--models", "toy/geo-buff-7b",  # all tasks
                 "--format", "parquet", "--endpoint", server.url,
                 "--cache-dir", cache, "--store", store)
    assert result.exit_code == 0, result.output
    fetched = [unquote(p) for p in server.files_fetched()]
    # only the `latest` split (two parts in this layout), not the timestamp split
    assert len(fetched) == 6 * 2 and all("/latest/" in p for p in fetched)
    assert not any("__results/" in p for p in fetched)
    configs = sorted((cache / "hub").rglob("toy__geo-buff-7b__*"))
    direct = tmp_path / "direct"
    assert cli("ingest", "lm-eval", *configs, store_dir=direct).exit_code == 0
    pd.testing.assert_frame_equal(_table(store), _table(direct))
    (results,) = (EXAMPLES / "toy__geo-buff-7b").glob("results_*.json")
    data = json.loads(results.read_text())
    acc = _accuracy(cli, store)
    for task in DEFAULT_KEY:
        assert acc[task]["toy/geo-buff-7b"] == pytest.approx(
            data["results"][task][DEFAULT_KEY[task]], abs=1e-12)


def test_leaderboard_unknown_names_have_did_you_mean(cli, server: Replay,
                                                     tmp_path: Path) -> None:
    details_datasets(server.root, models=("toy__tiny-1b", "toy__geo-buff-7b"))
    common = ["--endpoint", server.url, "--cache-dir", tmp_path / "cache", "--store",
              tmp_path / "store"]
    for args, expected in [
        (["--models", "toy/tiny-1c"], ("toy/tiny-1c: no Open LLM Leaderboard details dataset "
                                       "open-llm-leaderboard/toy__tiny-1c-details")),
        (["--models", "toy/tiny-1c"], "did you mean 'toy/tiny-1b'"),
        (["--models", "nobody/model"], "has no details dataset of organisation 'nobody'"),
        (["--models", "toy/tiny-1b", "--tasks", "toy_arth"],
         "no task 'toy_arth'; did you mean 'toy_arith'"),
        (["--models", "toy/tiny-1b", "--tasks", "toy_arith", "--format", "parquet"], None),
        (["--models", "tiny-1b"], "--models: expected Hub model ids ORG/NAME"),
    ]:
        result = cli("pull", "open-llm-leaderboard", *args, *common)
        if expected is None:
            assert result.exit_code == 0, result.output
            continue
        assert result.exit_code == 2, result.output
        assert expected in result.output, result.output
    assert set(_table(tmp_path / "store").task) == {"toy_arith"}


def test_leaderboard_unreachable_offline_and_damaged(cli, server: Replay, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    details_datasets(server.root, models=("toy__tiny-1b",))
    store, cache = tmp_path / "store", tmp_path / "cache"
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    args = ["pull", "open-llm-leaderboard", "--models", "toy/tiny-1b", "--tasks", "toy_arith",
            "--cache-dir", cache, "--store", store]
    message = one_error(cli(*args, "--endpoint", f"http://127.0.0.1:{port}"))
    assert "cannot reach the Hugging Face Hub" in message
    assert "hf download open-llm-leaderboard/toy__tiny-1b-details --repo-type dataset" in message
    assert "lm-router ingest lm-eval DIR" in message
    assert not store.exists() and not cache.exists()
    # a corrupt sample log (same size): the published SHA-256 catches it; nothing stored
    (log,) = (EXAMPLES / "toy__tiny-1b").glob("samples_toy_arith_*.jsonl")
    server.damage[log.name] = "corrupt"
    message = one_error(cli(*args, "--endpoint", server.url))
    assert "SHA-256 mismatch" in message and not store.exists()
    server.damage.clear()
    assert cli(*args, "--endpoint", server.url).exit_code == 0
    # HF_HUB_OFFLINE=1: the listing saved by the last pull, no request at all
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    before = len(server.requests)
    result = cli(*args, "--endpoint", server.url)
    assert result.exit_code == 0, result.output
    assert len(server.requests) == before
    message = one_error(cli("pull", "open-llm-leaderboard", "--models", "toy/geo-buff-7b",
                            "--cache-dir", cache, "--store", store, "--endpoint", server.url))
    assert "HF_HUB_OFFLINE is set and this dataset was never pulled" in message


def test_leaderboard_non_json_answer_is_one_error(cli, server: Replay, tmp_path: Path) -> None:
    """An endpoint answering 200 with a web page (a proxy, a captive portal): one error
    naming the URL, no JSONDecodeError traceback, nothing stored."""
    details_datasets(server.root, models=("toy__tiny-1b",))
    server.html_api = True
    store = tmp_path / "store"
    message = one_error(cli("pull", "open-llm-leaderboard", "--models", "toy/tiny-1b",
                            "--endpoint", server.url, "--cache-dir", tmp_path / "cache",
                            "--store", store))
    assert "the file listing: not valid JSON" in message and server.url in message
    assert "the Hugging Face Hub?" in message and not store.exists()


def test_leaderboard_token_goes_to_the_hub_only(cli, server: Replay, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """The gated datasets need the user's token; it must not follow a redirect to the CDN."""
    details_datasets(server.root, models=("toy__tiny-1b",))
    monkeypatch.setenv("HF_TOKEN", "hf_test_token")
    server.redirect = True
    result = cli("pull", "open-llm-leaderboard", "--models", "toy/tiny-1b", "--tasks",
                 "toy_arith", "--endpoint", server.url, "--cache-dir", tmp_path / "cache",
                 "--store", tmp_path / "store")
    assert result.exit_code == 0, result.output
    assert server.auth["api"] and set(server.auth["api"]) == {"Bearer hf_test_token"}
    assert set(server.auth["resolve"]) == {"Bearer hf_test_token"}
    assert len(server.auth["cdn"]) == 2 and set(server.auth["cdn"]) == {None}


# -- what a pull must survive: cut answers, a cache that cannot be written, stale files ---
HELM_STATE = "simple_mcqa%3Amodel%3Dmock_model-c/scenario_state.json"


def _helm_args(server: Replay, cache: Path, store: Path) -> list:
    return ["pull", "helm", "--suite", "lite", "--release", "v1.1.0", "--base-url",
            f"{server.url}/crfm-helm-public", "--cache-dir", cache, "--store", store]


def test_helm_chunked_answer_cut_short_is_not_kept(cli, server: Replay, tmp_path: Path) -> None:
    """No size and no MD5 published (GCS serving a gzip-stored object): a cut is still an
    error, the half file is not kept as complete, and the next run fetches it."""
    helm_bucket(server.root)
    server.damage[HELM_STATE] = "chunked-cut"
    cache, store = tmp_path / "cache", tmp_path / "store"
    message = one_error(cli(*_helm_args(server, cache, store)))
    assert "download interrupted" in message and not store.exists()
    assert not [p for p in cache.rglob("scenario_state.json") if "mock_model-c" in str(p)
                and "simple_mcqa" in str(p)]
    _no_partial_files(cache)
    del server.damage[HELM_STATE]
    assert cli(*_helm_args(server, cache, store)).exit_code == 0
    fixture = tmp_path / "fixture"
    assert cli("ingest", "helm", HELM_RUNS, store_dir=fixture).exit_code == 0
    pd.testing.assert_frame_equal(_table(store, ("origin", "benchmark")),
                                  _table(fixture, ("origin", "benchmark")))


def test_listings_cut_short_are_one_error(cli, server: Replay, tmp_path: Path) -> None:
    helm_bucket(server.root)
    details_datasets(server.root, models=("toy__tiny-1b",))
    server.damage["runs_to_run_suites.json"] = "truncate"
    message = one_error(cli(*_helm_args(server, tmp_path / "c1", tmp_path / "s1")))
    assert "runs_to_run_suites.json: download interrupted" in message
    server.cut_api = True
    message = one_error(cli("pull", "open-llm-leaderboard", "--models", "toy/tiny-1b",
                            "--endpoint", server.url, "--cache-dir", tmp_path / "c2",
                            "--store", tmp_path / "s2"))
    assert "/api/datasets/" in message and "download interrupted" in message
    assert not (tmp_path / "s1").exists() and not (tmp_path / "s2").exists()


def test_a_cache_that_cannot_be_written_is_one_error(cli, server: Replay, tmp_path: Path) -> None:
    helm_bucket(server.root)
    details_datasets(server.root, models=("toy__tiny-1b",))
    blocker = tmp_path / "afile"
    blocker.write_text("not a folder")
    message = one_error(cli(*_helm_args(server, blocker / "cache", tmp_path / "s1")))
    assert "cannot write the download cache" in message and "--cache-dir" in message
    message = one_error(cli("pull", "open-llm-leaderboard", "--models", "toy/tiny-1b",
                            "--endpoint", server.url, "--cache-dir", blocker / "cache",
                            "--store", tmp_path / "s2"))
    assert "cannot write the download cache" in message


def test_a_killed_runs_temp_files_are_removed_not_a_running_ones(cli, server: Replay,
                                                                  tmp_path: Path) -> None:
    import fcntl
    import os

    helm_bucket(server.root)
    cache, store = tmp_path / "cache", tmp_path / "store"
    folder = cache / "helm/lite/benchmark_output/runs/v1.1.0/simple_mcqa:model=mock_model-c"
    folder.mkdir(parents=True)
    dead = folder / ".scenario_state.json.killed1.part"
    dead.write_bytes(b"x" * 1000)
    alive = folder / ".scenario_state.json.running.part"
    alive.write_bytes(b"y" * 1000)
    fd = os.open(alive, os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)  # as a download still going in another process holds it
    try:
        assert cli(*_helm_args(server, cache, store)).exit_code == 0
    finally:
        os.close(fd)
    assert not dead.exists() and alive.exists()
    assert (folder / "scenario_state.json").stat().st_size == (
        HELM_RUNS / "simple_mcqa:model=mock_model-c" / "scenario_state.json").stat().st_size


def test_a_damaged_saved_listing_is_fetched_again_or_named(cli, server: Replay, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch
                                                           ) -> None:
    helm_bucket(server.root)
    details_datasets(server.root, models=("toy__tiny-1b",))
    cache = tmp_path / "cache"
    saved = cache / "helm/lite/benchmark_output/releases/v1.1.0/runs_to_run_suites.json"
    saved.parent.mkdir(parents=True)
    saved.write_text("")  # an older version's interrupted write
    assert cli(*_helm_args(server, cache, tmp_path / "s1")).exit_code == 0
    assert json.loads(saved.read_text())  # fetched again and saved whole
    args = ["pull", "open-llm-leaderboard", "--models", "toy/tiny-1b", "--tasks", "toy_arith",
            "--endpoint", server.url, "--cache-dir", cache, "--store", tmp_path / "s2"]
    assert cli(*args).exit_code == 0
    (listing,) = cache.rglob(".listing.json")
    listing.write_text(listing.read_text()[:100])
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    message = one_error(cli(*args))
    assert "HF_HUB_OFFLINE is set and the file listing saved by the last pull is damaged" in \
        message and str(listing) in message


def test_offline_a_file_not_in_the_cache_is_an_error_not_a_request(
        cli, server: Replay, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    details_datasets(server.root, models=("toy__tiny-1b",))
    cache, store = tmp_path / "cache", tmp_path / "store"
    common = ["--models", "toy/tiny-1b", "--endpoint", server.url, "--cache-dir", cache,
              "--store", store]
    assert cli("pull", "open-llm-leaderboard", *common, "--tasks", "toy_arith").exit_code == 0
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    before = list(server.requests)
    message = one_error(cli("pull", "open-llm-leaderboard", *common, "--tasks", "toy_units"))
    assert "not in the download cache, and HF_HUB_OFFLINE is set" in message
    assert "samples_toy_units_" in message and server.requests == before
    assert set(_table(store).task) == {"toy_arith"}  # nothing more stored


def test_the_manual_route_names_the_model_whose_file_failed(cli, server: Replay,
                                                            tmp_path: Path) -> None:
    details_datasets(server.root, models=("toy__tiny-1b", "toy__math-whiz-7b"))
    (log,) = (EXAMPLES / "toy__math-whiz-7b").glob("samples_toy_arith_*.jsonl")
    server.damage[f"toy__math-whiz-7b/{log.name}"] = "error"
    message = one_error(cli("pull", "open-llm-leaderboard", "--models",
                            "toy/tiny-1b,toy/math-whiz-7b", "--tasks", "toy_arith", "--endpoint",
                            server.url, "--cache-dir", tmp_path / "cache", "--store",
                            tmp_path / "store", "--jobs", "1"))
    assert "HTTP 500" in message
    assert "hf download open-llm-leaderboard/toy__math-whiz-7b-details" in message
    assert "toy__tiny-1b-details" not in message


def test_parquet_files_an_upstream_rewrite_dropped_are_not_ingested(cli, server: Replay,
                                                                     tmp_path: Path) -> None:
    """The model was re-run: ``latest`` is rewritten with one part instead of two (and other
    scores); the part the cache still holds from the first pull must not be read."""
    details_datasets(server.root, models=("toy__geo-buff-7b",))
    cache = tmp_path / "cache"
    args = ["pull", "open-llm-leaderboard", "--models", "toy/geo-buff-7b", "--tasks",
            "toy_arith", "--format", "parquet", "--endpoint", server.url, "--cache-dir", cache]
    assert cli(*args, "--store", tmp_path / "s1").exit_code == 0
    latest = (server.root / "hub/open-llm-leaderboard/toy__geo-buff-7b-details"
              / quote("refs/convert/parquet", safe="") / "toy__geo-buff-7b__toy_arith" / "latest")
    parts = sorted(latest.glob("*.parquet"))
    assert len(parts) == 2
    rerun = pd.concat([pd.read_parquet(p) for p in parts]).iloc[:10]
    rerun["acc"] = 1 - rerun["acc"]
    for part in parts:
        part.unlink()
    pq.write_table(pa.Table.from_pandas(rerun, preserve_index=False), latest / "0000.parquet")
    store = tmp_path / "s2"
    assert cli(*args, "--store", store).exit_code == 0
    table = _table(store)
    assert sorted(table.instance_id) == sorted(str(d) for d in rerun.doc_id)
    assert table.correct.mean() == pytest.approx(rerun["acc"].mean())
