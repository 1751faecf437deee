"""A local stand-in of the Hugging Face Hub routes that an upload uses, over real HTTP.

huggingface_hub 2.4's ``HfApi.create_repo`` + ``upload_folder`` (classic path) call, in order:

- ``POST /api/repos/create``  JSON ``{name, organization, type, visibility}``; 409 + ``url`` if it
  exists (``exist_ok=True`` accepts that);
- ``POST /api/validate-yaml``  when a ``README.md`` is uploaded (twice: folder scan and commit);
- ``POST /api/{type}s/{owner}/{name}/preupload/{rev}``  -> per file ``uploadMode`` (``lfs`` or
  ``regular``), ``shouldIgnore`` and the ``oid`` of the file already there (unchanged files are
  then left out of the commit);
- for LFS files: ``POST /{prefix}{owner}/{name}.git/info/lfs/objects/batch`` (git-lfs batch API,
  ``transfer: basic``), a ``PUT`` of the bytes to the returned (pre-signed, token-less) URL, and
  the ``verify`` action;
- ``POST /api/{type}s/{owner}/{name}/commit/{rev}``  ndjson: a ``header`` line, then ``file``
  (base64 content), ``lfsFile`` (sha256 oid) and ``deletedFile``/``deletedFolder`` lines;
- ``GET /api/{type}s/{owner}/{name}[/revision/{rev}]``  (repo info) when nothing changed.

Xet: with ``hf_xet`` installed, huggingface_hub 2.4 decides on the client alone to send LFS files
through Xet storage (``utils._runtime.is_xet_available``); no server answer turns that off. Its
supported switch is ``HF_HUB_DISABLE_XET=1``, read once into ``huggingface_hub.constants`` at
import, so the fixture sets both the variable (for subprocesses) and the constant (in process).

Committed files land in ``root/<repo_type>s/<owner>/<name>/``; LFS blobs in ``root/.lfs/<oid>``.
Every request is recorded (method, route, whether a bearer token came, status), never the token.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import secrets
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
import yaml
from huggingface_hub import constants
from huggingface_hub.utils.sha import git_hash

#: Suffixes the Hub's default ``.gitattributes`` stores with LFS (the ones this project writes).
LFS_SUFFIXES = (".parquet", ".arrow", ".safetensors", ".bin", ".pt", ".png", ".jpg", ".npz", ".zip")
#: Files larger than this go through LFS whatever their name, as on the Hub.
LFS_SIZE = 10 * 1024 * 1024

_TYPES = {"models": "model", "datasets": "dataset", "spaces": "space"}
_PREFIX = {"model": "", "dataset": "datasets/", "space": "spaces/"}
_NAME = r"[\w.-]+/[\w.-]+"
_ROUTES: tuple[tuple[str, str, re.Pattern[str]], ...] = (
    ("POST", "create_repo", re.compile(r"^/api/repos/create$")),
    ("POST", "validate_yaml", re.compile(r"^/api/validate-yaml$")),
    (
        "POST",
        "preupload",
        re.compile(rf"^/api/(?P<t>\w+)/(?P<repo>{_NAME})/preupload/(?P<rev>.+)$"),
    ),
    ("POST", "commit", re.compile(rf"^/api/(?P<t>\w+)/(?P<repo>{_NAME})/commit/(?P<rev>.+)$")),
    (
        "GET",
        "repo_info",
        re.compile(rf"^/api/(?P<t>\w+)/(?P<repo>{_NAME})(/revision/(?P<rev>.+))?$"),
    ),
    (
        "POST",
        "lfs_batch",
        re.compile(rf"^/((?P<t>datasets|spaces)/)?(?P<repo>{_NAME})\.git/info/lfs/objects/batch$"),
    ),
    (
        "POST",
        "lfs_verify",
        re.compile(rf"^/((?P<t>datasets|spaces)/)?(?P<repo>{_NAME})\.git/info/lfs/objects/verify$"),
    ),
    ("PUT", "lfs_upload", re.compile(r"^/_standin/lfs-upload/(?P<oid>[0-9a-f]{64})$")),
    # Asked by huggingface_hub when Xet is on; never served (see the module docstring).
    ("GET", "xet_write_token", re.compile(rf"^/api/\w+/{_NAME}/xet-write-token/.+$")),
)


class _Reply(Exception):
    """An HTTP answer decided deep in a handler (errors mostly)."""

    def __init__(self, status: int, body: dict, headers: dict[str, str] | None = None):
        super().__init__(status)
        self.status, self.body, self.headers = status, body, headers or {}


def _error(status: int, message: str, code: str | None = None) -> _Reply:
    headers = {"X-Error-Message": message}
    if code is not None:
        headers["X-Error-Code"] = code
    return _Reply(status, {"error": message}, headers)


@dataclass(frozen=True)
class RecordedRequest:
    """One request the stand-in answered; ``bearer`` says a bearer token came (never its value)."""

    method: str
    route: str
    path: str
    bearer: bool
    status: int


@dataclass
class _Repo:
    repo_type: str
    repo_id: str
    private: bool
    modes: dict[str, str] = field(default_factory=dict)  # path in repo -> "regular" | "lfs"
    commits: list[tuple[str, str]] = field(default_factory=list)  # (oid, summary)

    @property
    def sha(self) -> str:
        return self.commits[-1][0] if self.commits else "0" * 40


class HubStandin:
    """The Hub routes of an upload on ``127.0.0.1:<ephemeral port>``, served from a thread.

    Args:
        root: where repos and LFS blobs are stored.
        token: the only bearer token accepted (others get 401 like the Hub).
    """

    def __init__(self, root: Path, token: str | None = None):
        self.root = Path(root)
        self.token = token or f"hf_standin_{secrets.token_hex(12)}"
        self.requests: list[RecordedRequest] = []
        self._repos: dict[tuple[str, str], _Repo] = {}
        self._upload_signatures: dict[str, str] = {}
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def __repr__(self) -> str:  # the accepted token stays out of reprs
        return f"HubStandin(endpoint={self.endpoint!r}, root={str(self.root)!r})"

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> HubStandin:
        (self.root / ".lfs").mkdir(parents=True, exist_ok=True)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            assert self._thread is not None
            self._thread.join(timeout=5)
            self._server = None

    def __enter__(self) -> HubStandin:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def endpoint(self) -> str:
        assert self._server is not None, "stand-in not started"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    # -- what tests look at ----------------------------------------------------------------------

    def repo_path(self, repo_id: str, repo_type: str = "model") -> Path:
        """Folder holding the committed files of ``repo_id``."""
        return self.root / f"{repo_type}s" / repo_id

    def routes(self) -> list[str]:
        """Routes answered so far, in order (e.g. ``["create_repo", "preupload", ...]``)."""
        with self._lock:
            return [request.route for request in self.requests]

    def commits(self, repo_id: str, repo_type: str = "model") -> list[str]:
        """Commit summaries of ``repo_id``, oldest first."""
        with self._lock:
            return [summary for _, summary in self._repos[(repo_type, repo_id)].commits]

    def lfs_paths(self, repo_id: str, repo_type: str = "model") -> set[str]:
        """Paths of ``repo_id`` committed as LFS files."""
        with self._lock:
            modes = self._repos[(repo_type, repo_id)].modes
            return {path for path, mode in modes.items() if mode == "lfs"}

    # -- routes ----------------------------------------------------------------------------------

    def handle(self, method: str, route: str, match: re.Match[str], query: dict, body: bytes):
        """Answer one authorised request: returns ``(status, json_body)`` or raises ``_Reply``."""
        if route == "create_repo":
            return self._create_repo(json.loads(body))
        if route == "validate_yaml":
            return self._validate_yaml(json.loads(body))
        if route == "lfs_upload":
            return self._lfs_upload(match["oid"], query, body)
        if route == "xet_write_token":
            raise _error(404, "the stand-in serves no Xet storage: set HF_HUB_DISABLE_XET=1")
        # API routes name the type in plural ("datasets"); git routes prefix it, models bare.
        repo_type = _TYPES.get(match["t"] or "models", "unknown")
        repo = self._repo(repo_type, match["repo"])
        if match.groupdict().get("rev") not in (None, "main"):
            raise _error(404, f"Revision Not Found: {match['rev']}", "RevisionNotFound")
        if "create_pr" in query:
            raise _error(400, "the stand-in stores the main branch only (no pull requests)")
        if route == "preupload":
            return self._preupload(repo, json.loads(body))
        if route == "commit":
            return self._commit(repo, body)
        if route == "repo_info":
            return 200, self._info(repo)
        if route == "lfs_batch":
            return self._lfs_batch(repo, json.loads(body))
        return self._lfs_verify(json.loads(body))

    def _repo(self, repo_type: str, repo_id: str) -> _Repo:
        with self._lock:
            repo = self._repos.get((repo_type, repo_id))
        if repo is None:
            raise _error(404, "Repository not found", "RepoNotFound")
        return repo

    def _url(self, repo_type: str, repo_id: str) -> str:
        return f"{self.endpoint}/{_PREFIX[repo_type]}{repo_id}"

    def _create_repo(self, payload: dict) -> tuple[int, dict]:
        repo_type = payload.get("type") or "model"
        if repo_type not in _PREFIX or not payload.get("organization") or not payload.get("name"):
            raise _error(400, "expected a type and an organization/name")
        repo_id = f"{payload['organization']}/{payload['name']}"
        url = self._url(repo_type, repo_id)
        with self._lock:
            if (repo_type, repo_id) in self._repos:
                return 409, {"error": f"You already created this {repo_type} repo", "url": url}
            private = payload.get("visibility") == "private"
            self._repos[(repo_type, repo_id)] = _Repo(repo_type, repo_id, private)
        self.repo_path(repo_id, repo_type).mkdir(parents=True, exist_ok=True)
        return 200, {"url": url, "name": repo_id, "id": secrets.token_hex(12)}

    def _validate_yaml(self, payload: dict) -> tuple[int, dict]:
        content = payload.get("content", "")
        match = re.match(r"^---\n(.*?)\n---\n", content, flags=re.S)
        if match is None:
            return 200, {"errors": [], "warnings": [{"message": "empty or missing yaml metadata"}]}
        try:
            metadata = yaml.safe_load(match.group(1))
        except yaml.YAMLError as err:
            return 400, {"errors": [{"message": f"invalid YAML: {err}"}]}
        if not isinstance(metadata, dict):
            return 400, {"errors": [{"message": "YAML metadata must be a mapping"}]}
        errors = [{"message": m} for m in _repo_id_errors(metadata, payload.get("repoType"))]
        return (400 if errors else 200), {"errors": errors, "warnings": []}

    def _preupload(self, repo: _Repo, payload: dict) -> tuple[int, dict]:
        answers = []
        for item in payload["files"]:
            path = _checked_path(item["path"])
            sample = base64.b64decode(item["sample"])
            lfs = path.endswith(LFS_SUFFIXES) or b"\x00" in sample or item["size"] >= LFS_SIZE
            answers.append(
                {
                    "path": path,
                    "uploadMode": "lfs" if lfs else "regular",
                    "shouldIgnore": False,
                    "oid": self._stored_oid(repo, path),
                }
            )
        return 200, {"files": answers, "commitOid": repo.sha}

    def _stored_oid(self, repo: _Repo, path: str) -> str | None:
        """The oid huggingface_hub compares with: sha256 for LFS files, git blob sha1 else."""
        stored = self.repo_path(repo.repo_id, repo.repo_type) / path
        mode = repo.modes.get(path)
        if mode is None or not stored.is_file():
            return None
        data = stored.read_bytes()
        return hashlib.sha256(data).hexdigest() if mode == "lfs" else git_hash(data)

    def _lfs_batch(self, repo: _Repo, payload: dict) -> tuple[int, dict]:
        if payload.get("operation") != "upload" or "basic" not in payload.get("transfers", []):
            raise _error(400, "only the upload operation with the basic transfer is served")
        objects = []
        for item in payload["objects"]:
            oid, size = item["oid"], item["size"]
            answer = {"oid": oid, "size": size, "authenticated": True}
            repo_url = self._url(repo.repo_type, repo.repo_id)
            blob = self.root / ".lfs" / oid
            if not (blob.is_file() and blob.stat().st_size == size):
                signature = secrets.token_hex(16)
                with self._lock:
                    self._upload_signatures[oid] = signature
                answer["actions"] = {
                    "upload": {
                        "href": f"{self.endpoint}/_standin/lfs-upload/{oid}?signature={signature}",
                    },
                    "verify": {
                        "href": f"{repo_url}.git/info/lfs/objects/verify",
                    },
                }
            objects.append(answer)
        return 200, {"transfer": "basic", "objects": objects}

    def _lfs_upload(self, oid: str, query: dict, body: bytes) -> tuple[int, dict]:
        with self._lock:
            expected = self._upload_signatures.pop(oid, None)
        given = query.get("signature", [""])[0]
        if expected is None or not hmac.compare_digest(expected, given):
            raise _error(403, "upload URL signature is missing, expired or wrong")
        if hashlib.sha256(body).hexdigest() != oid:
            raise _error(400, "uploaded bytes do not match the announced sha256")
        _write_atomic(self.root / ".lfs" / oid, body)
        return 200, {}

    def _lfs_verify(self, payload: dict) -> tuple[int, dict]:
        blob = self.root / ".lfs" / payload["oid"]
        if not (blob.is_file() and blob.stat().st_size == payload["size"]):
            raise _error(404, "LFS object not found or of another size")
        return 200, {"message": "verified"}

    def _commit(self, repo: _Repo, body: bytes) -> tuple[int, dict]:
        lines = [json.loads(line) for line in body.splitlines() if line.strip()]
        if not lines or lines[0].get("key") != "header" or not lines[0]["value"].get("summary"):
            raise _error(400, "a commit starts with a header line holding a summary")
        writes: dict[str, tuple[bytes, str]] = {}
        deletions: list[tuple[str, bool]] = []
        for line in lines[1:]:
            key, value = line["key"], line["value"]
            path = _checked_path(value["path"])
            if key == "file":
                if value.get("encoding") != "base64":
                    raise _error(400, f"{path}: only base64 content is served")
                writes[path] = (base64.b64decode(value["content"]), "regular")
            elif key == "lfsFile":
                blob = self.root / ".lfs" / value["oid"]
                if value.get("algo") != "sha256" or not blob.is_file():
                    raise _error(422, f"{path}: LFS object {value['oid']} was never uploaded")
                writes[path] = (blob.read_bytes(), "lfs")
            elif key in ("deletedFile", "deletedFolder"):
                deletions.append((path, key == "deletedFolder"))
            else:
                raise _error(400, f"unknown commit line {key!r}")
        folder = self.repo_path(repo.repo_id, repo.repo_type)
        with self._lock:  # everything checked: apply the whole commit
            for path, is_folder in deletions:
                _delete(folder, path, is_folder)
                repo.modes = {p: m for p, m in repo.modes.items() if not _under(p, path, is_folder)}
            for path, (data, mode) in writes.items():
                _write_atomic(folder / path, data)
                repo.modes[path] = mode
            oid = hashlib.sha1(repo.sha.encode() + body).hexdigest()
            repo.commits.append((oid, lines[0]["value"]["summary"]))
        url = f"{self._url(repo.repo_type, repo.repo_id)}/commit/{oid}"
        return 200, {"success": True, "commitOid": oid, "commitUrl": url, "pullRequestUrl": None}

    def _info(self, repo: _Repo) -> dict:
        with self._lock:
            siblings = [{"rfilename": path} for path in sorted(repo.modes)]
            return {
                "id": repo.repo_id,
                "sha": repo.sha,
                "private": repo.private,
                "siblings": siblings,
            }


#: What the Hub accepts as a repo id in metadata: ``name`` or ``owner/name``.
_METADATA_ID = re.compile(r"^(?:[\w][\w.-]{0,95}/)?[\w][\w.-]{0,95}$")


def _repo_id_errors(metadata: dict, repo_type: str | None) -> list[str]:
    """The Hub's rule that trips uploads: ``datasets`` / ``base_model`` (and a Space's
    ``models``) hold repo ids, never local paths (written here, independently of the project's
    own pre-push check, so the two can be compared)."""
    keys = ["datasets", "base_model"] + (["models"] if repo_type == "space" else [])
    errors = []
    for key in keys:
        value = metadata.get(key)
        if value is None:
            continue
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list):
            errors.append(f'"{key}" must be a string or an array of strings')
            continue
        for item in items:
            if (
                not isinstance(item, str)
                or item.startswith((".", "/", "~"))
                or "\\" in item
                or "--" in item
                or ".." in item
                or not _METADATA_ID.match(item)
            ):
                errors.append(f'"{key}" holds {item!r}, which is not a valid repo id')
    return errors


def _checked_path(path: str) -> str:
    parts = path.split("/")
    if path.startswith("/") or any(part in ("", ".", "..", ".git") for part in parts):
        raise _error(400, f"invalid path in repo: {path!r}")
    return path


def _under(path: str, target: str, is_folder: bool) -> bool:
    return path.startswith(target.rstrip("/") + "/") if is_folder else path == target


def _delete(folder: Path, path: str, is_folder: bool) -> None:
    target = folder / path
    if is_folder:
        for item in sorted(target.rglob("*"), reverse=True):
            item.unlink() if item.is_file() else item.rmdir()
        if target.is_dir():
            target.rmdir()
    elif target.is_file():
        target.unlink()


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{secrets.token_hex(4)}.partial")
    partial.write_bytes(data)
    os.replace(partial, path)


def _handler_for(standin: HubStandin) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            self._serve("GET")

        def do_POST(self) -> None:  # noqa: N802
            self._serve("POST")

        def do_PUT(self) -> None:  # noqa: N802
            self._serve("PUT")

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - quiet tests
            pass

        def _serve(self, method: str) -> None:
            url = urlsplit(self.path)
            path, query = unquote(url.path), parse_qs(url.query)
            route, match = "unknown", None
            for route_method, name, pattern in _ROUTES:
                found = pattern.match(path)
                if found and route_method == method:
                    route, match = name, found
                    break
            authorization = self.headers.get("Authorization", "")
            bearer = authorization.startswith("Bearer ") and len(authorization) > len("Bearer ")
            try:
                body = self._body()
                if match is None:
                    raise _error(404, f"no stand-in route for {method} {path}")
                if route != "lfs_upload":  # pre-signed URL: no token, like S3
                    if not bearer:
                        raise _error(401, "You must be authenticated to access this resource")
                    given = authorization[len("Bearer ") :]
                    if not hmac.compare_digest(given.encode(), standin.token.encode()):
                        raise _error(401, "Invalid credentials in Authorization header")
                status, reply = standin.handle(method, route, match, query, body)
                headers: dict[str, str] = {}
            except _Reply as answer:
                status, reply, headers = answer.status, answer.body, answer.headers
            except (KeyError, TypeError, ValueError) as err:
                status, reply, headers = 400, {"error": f"malformed request: {err}"}, {}
            with standin._lock:
                standin.requests.append(RecordedRequest(method, route, path, bearer, status))
            data = json.dumps(reply).encode()
            self.send_response(status)
            content_type = (
                "application/vnd.git-lfs+json" if route == "lfs_batch" else "application/json"
            )
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

        def _body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                chunks = []
                while True:
                    size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                    if size == 0:
                        while self.rfile.readline().strip():  # trailers
                            pass
                        return b"".join(chunks)
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    return Handler


@pytest.fixture
def hub_standin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[HubStandin]:
    """A running stand-in with ``HF_ENDPOINT`` pointing at it, online mode and Xet off.

    Use ``hub_standin.token`` as the push token; everything is undone at teardown.
    """
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    with HubStandin(tmp_path / "hub-standin") as standin:
        monkeypatch.setenv("HF_ENDPOINT", standin.endpoint)
        yield standin
