"""Push a saved folder (dataset shards and card, or a PEFT adapter) to the Hugging Face Hub.

One upload path for the dataset tools and the training code: resolve the token (explicit, then
``HF_TOKEN``, then the ``hf auth login`` cache), create the repo if needed, and upload the folder
in one commit through :class:`huggingface_hub.HfApi`. Errors are one line that says what failed
and what to do; the token never appears in a message, a log line, a repr or an exception chain.

Example:
    >>> token = resolve_token()  # before any long work: fails fast without a token
    >>> url = push_folder("out/qa", "me/qeu-connectors", repo_type="dataset", token=token)
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Literal

import httpx2
from huggingface_hub import HfApi, get_token
from huggingface_hub.errors import HfHubHTTPError, HFValidationError, OfflineModeIsEnabled
from huggingface_hub.utils import validate_repo_id

__all__ = [
    "REPO_TYPES",
    "HubError",
    "HubPushError",
    "MissingTokenError",
    "check_repo_id",
    "push_folder",
    "quiet_http_logs",
    "resolve_endpoint",
    "resolve_token",
]

logger = logging.getLogger(__name__)

#: Loggers of the HTTP clients under huggingface_hub. At INFO, httpx / httpx2 log every request
#: line with its full URL, pre-signed upload URLs (their signature in the query) included.
HTTP_LOGGERS: tuple[str, ...] = ("httpx", "httpx2", "httpcore", "urllib3")

RepoType = Literal["dataset", "model"]
REPO_TYPES: tuple[str, ...] = ("dataset", "model")

#: Upload steps by the route they call, so that an HTTP error names the step that failed.
_STEPS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"^/api/repos/create$"), "create repo"),
    (re.compile(r"^/api/validate-yaml$"), "README metadata check"),
    (re.compile(r"/preupload/"), "preupload"),
    (re.compile(r"/commit/"), "commit"),
    (re.compile(r"\.git/info/lfs/objects/batch$"), "LFS batch"),
    (re.compile(r"\.git/info/lfs/objects/verify$"), "LFS verify"),
    (re.compile(r"^/api/(models|datasets|spaces)/"), "repo info"),
)

_ADVICE = {
    401: "check the token (set HF_TOKEN or run `hf auth login`)",
    403: "the token needs write access to this namespace",
    404: "check the repo id and repo type",
}


class HubError(RuntimeError):
    """A Hub operation failed; the message says what to do and never holds the token."""


class MissingTokenError(HubError):
    """No Hugging Face token was found, so nothing was uploaded."""


class HubPushError(HubError):
    """The Hub (or the network) refused a push; the message names the route that failed."""


def quiet_http_logs(level: int = logging.WARNING) -> None:
    """Keep request URLs out of an application's logs (call it after configuring logging).

    An app that logs at INFO (the Space does) would otherwise print one line per Hub request,
    among them the pre-signed storage URLs of every upload; warnings and errors still show.
    """
    for name in HTTP_LOGGERS:
        logging.getLogger(name).setLevel(level)


def resolve_token(token: str | None = None) -> str:
    """Return the token to push with: ``token``, else ``HF_TOKEN``, else the login cache.

    Call it before long work (building a dataset, training) so that a missing token fails fast.

    Raises:
        MissingTokenError: when none of the three holds a token.
    """
    for candidate in (token, os.environ.get("HF_TOKEN"), get_token()):
        if candidate is not None and candidate.strip():
            return candidate.strip()
    raise MissingTokenError(
        "no Hugging Face token found: set HF_TOKEN or run `hf auth login` (nothing was uploaded)"
    )


def resolve_endpoint(endpoint: str | None = None) -> str | None:
    """Return ``endpoint``, else ``HF_ENDPOINT`` read now (None means huggingface_hub's default).

    huggingface_hub reads ``HF_ENDPOINT`` once at import; reading it per call lets a test or a
    caller point one push at another Hub (or a local stand-in) without re-importing.
    """
    chosen = endpoint or os.environ.get("HF_ENDPOINT") or None
    return chosen.rstrip("/") if chosen else None


def check_repo_id(repo_id: str) -> str:
    """Return ``repo_id`` if it is a valid ``owner/name`` Hub id, else raise ValueError.

    The owner is required so that the repo URL is known without asking the Hub who we are.
    """
    try:
        validate_repo_id(repo_id)
    except HFValidationError as err:
        raise ValueError(f"invalid Hub repo id {repo_id!r}: {err}") from None
    if repo_id.count("/") != 1:
        raise ValueError(
            f"invalid Hub repo id {repo_id!r}: use the form 'owner/name' (e.g. 'me/qeu-connectors')"
        )
    return repo_id


def push_folder(
    folder: str | os.PathLike[str],
    repo_id: str,
    *,
    repo_type: RepoType,
    private: bool = False,
    token: str | None = None,
    commit_message: str | None = None,
    endpoint: str | None = None,
) -> str:
    """Create ``repo_id`` if needed and upload every file of ``folder`` in one commit.

    Args:
        folder: a saved dataset (parquet shards + ``README.md`` card) or an adapter folder.
        repo_id: ``owner/name`` on the Hub.
        repo_type: ``"dataset"`` or ``"model"``.
        private: visibility when the repo is created (an existing repo keeps its own).
        token: see :func:`resolve_token`.
        commit_message: defaults to ``"Upload <folder name> with qeu_space"``.
        endpoint: see :func:`resolve_endpoint`.

    Returns:
        The URL of the commit (of the last commit when nothing changed).

    Raises:
        ValueError: bad ``repo_type``, ``repo_id`` or ``folder`` (checked before any request).
        MissingTokenError: no token.
        HubPushError: an HTTP or network error, naming the route that failed.
    """
    if repo_type not in REPO_TYPES:
        raise ValueError(f"repo_type must be one of {REPO_TYPES}, got {repo_type!r}")
    check_repo_id(repo_id)
    path = Path(folder)
    if not path.is_dir():
        raise ValueError(f"folder to push {str(path)!r} does not exist or is not a directory")
    n_files = sum(1 for item in path.rglob("*") if item.is_file())
    if n_files == 0:
        raise ValueError(f"folder to push {str(path)!r} holds no files")
    resolved = resolve_token(token)
    api = HfApi(endpoint=resolve_endpoint(endpoint), token=resolved)
    message = commit_message or f"Upload {path.resolve().name} with qeu_space"

    failure: str | None = None
    try:
        api.create_repo(repo_id, repo_type=repo_type, private=private, exist_ok=True)
        info = api.upload_folder(
            repo_id=repo_id, folder_path=path, repo_type=repo_type, commit_message=message
        )
    except Exception as exc:  # noqa: BLE001 - only transport errors are translated below
        failure = _describe_failure(
            exc, repo_id=repo_id, repo_type=repo_type, endpoint=api.endpoint
        )
        if failure is None:
            raise
    if failure is not None:
        # Raised outside the except block so that no chained exception (whose request headers
        # hold the token) travels with it.
        raise HubPushError(failure.replace(resolved, "<token>"))
    # The repo and commit id only: a URL (of a private repo, say) stays out of the logs.
    logger.info("pushed %d files to %s repo %s (commit %s)", n_files, repo_type, repo_id, info.oid)
    return info.commit_url


def _describe_failure(
    exc: BaseException, *, repo_id: str, repo_type: str, endpoint: str
) -> str | None:
    """One-line description of an HTTP/network failure inside ``exc``'s cause chain, else None."""
    target = f"push to {repo_type} repo '{repo_id}' at {endpoint}"
    cause: BaseException | None = exc
    for _ in range(32):  # a cause chain, bounded
        if cause is None:
            break
        if isinstance(cause, OfflineModeIsEnabled):
            return (
                f"{target} refused: HF_HUB_OFFLINE is set; unset it to push (nothing was uploaded)"
            )
        if isinstance(cause, HfHubHTTPError) and cause.response is not None:
            response = cause.response
            method, route = response.request.method, response.request.url.path
            server = " ".join(str(cause.server_message or response.reason_phrase or "").split())
            advice = _ADVICE.get(response.status_code, "see the server message")
            return (
                f"{target} failed at {_step_of(route)} ({method} {route}): "
                f"HTTP {response.status_code} {server}; {advice}"
            )
        if isinstance(cause, httpx2.TransportError):
            request = cause.request if _has_request(cause) else None
            where = f" ({request.method} {request.url.path})" if request is not None else ""
            return (
                f"{target} failed{where}: cannot reach the Hub ({type(cause).__name__}); "
                "check the network or HF_ENDPOINT"
            )
        if isinstance(cause, ConnectionError):  # e.g. raised by hf_xet's storage client
            detail = " ".join(str(cause).split())
            return f"{target} failed: cannot reach the Hub storage ({detail}); check the network"
        cause = cause.__cause__ or cause.__context__
    return None


def _step_of(route: str) -> str:
    for pattern, step in _STEPS:
        if pattern.search(route):
            return step
    return "file upload"


def _has_request(error: httpx2.TransportError) -> bool:
    try:
        error.request  # noqa: B018 - the property raises when no request is attached
    except RuntimeError:
        return False
    return True
