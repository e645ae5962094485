"""Weights on the Hugging Face Hub: ``hf://ORG/REPO[@REVISION][/FILE]`` names a file of a model repository.

The file is fetched with ``huggingface_hub.hf_hub_download`` into the library's cache (``HF_HUB_CACHE``,
else ``HF_HOME/hub``, else ``~/.cache/huggingface/hub``) and read from there afterwards; with
``HF_HUB_OFFLINE=1`` nothing is downloaded and only the cache is read. Anything that accepts a
weights path through :func:`resolve_weights` (``havic infer --weights``, ``havic evaluate
--weights``, :func:`havic.load_detector`) accepts such an id.

Examples:
    >>> parse_hub_id("hf://JielunPeng/HAVIC/pt_model.200.pth")
    HubId(repo_id='JielunPeng/HAVIC', filename='pt_model.200.pth', revision=None)
    >>> str(parse_hub_id("hf://my-org/havic-favc@v1"))
    'hf://my-org/havic-favc@v1/model.safetensors'
    >>> is_hub_id("runs/x/export/best.safetensors")
    False
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from havic.checkpoints.files import CheckpointError

__all__ = [
    "DEFAULT_FILENAME", "HUB_SCHEME", "HubError", "HubId", "download", "hub_cache_dir", "hub_offline", "is_hub_id",
    "parse_hub_id", "resolve_weights",
]

HUB_SCHEME = "hf://"
DEFAULT_FILENAME = "model.safetensors"  # what `havic export` writes, so hf://ORG/REPO alone finds it
_NAME = r"[A-Za-z0-9][A-Za-z0-9._-]*"
_ID = re.compile(rf"^(?P<org>{_NAME})/(?P<repo>{_NAME})(?:@(?P<rev>[^/\s]+))?(?:/(?P<file>\S+))?$")
_TRUE = {"1", "ON", "YES", "TRUE"}  # huggingface_hub's reading of boolean environment variables


class HubError(CheckpointError):
    """A Hub id that is malformed or cannot be fetched; the message names the id and the reason."""


@dataclass(frozen=True)
class HubId:
    """One file of a model repository on the Hub.

    Attributes:
        repo_id: ``ORG/REPO``.
        filename: path of the file inside the repository.
        revision: branch, tag or commit; None: the default branch.
    """

    repo_id: str
    filename: str = DEFAULT_FILENAME
    revision: str | None = None

    def __str__(self) -> str:
        rev = f"@{self.revision}" if self.revision else ""
        return f"{HUB_SCHEME}{self.repo_id}{rev}/{self.filename}"


def is_hub_id(text: str | os.PathLike) -> bool:
    """Whether `text` names a Hub file (starts with ``hf://``), as opposed to a local path."""
    return isinstance(text, str) and text.startswith(HUB_SCHEME)


def parse_hub_id(text: str) -> HubId:
    """Split ``hf://ORG/REPO[@REVISION][/FILE]``; FILE defaults to :data:`DEFAULT_FILENAME`.

    Raises:
        HubError: not of that form (the message shows the expected form).
    """
    found = _ID.match(text[len(HUB_SCHEME):]) if is_hub_id(text) else None
    file = found and found.group("file")
    if found is None or (file and any(part in ("", ".", "..") for part in file.split("/"))):
        raise HubError(f"{text!r}: not a Hub id; expected hf://ORG/REPO[@REVISION][/FILE]")
    return HubId(f"{found.group('org')}/{found.group('repo')}", file or DEFAULT_FILENAME, found.group("rev"))


def hub_offline() -> bool:
    """``HF_HUB_OFFLINE`` as huggingface_hub reads it, looked up now (tests and jobs set it late)."""
    return os.environ.get("HF_HUB_OFFLINE", "").upper() in _TRUE


def hub_cache_dir() -> Path | None:
    """The Hub cache named by ``HF_HUB_CACHE`` or ``HF_HOME`` now; None: huggingface_hub's default."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.path.expandvars(os.environ["HF_HUB_CACHE"])).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.path.expandvars(os.environ["HF_HOME"])).expanduser() / "hub"
    return None


def download(hub_id: HubId | str, cache_dir: str | os.PathLike | None = None, offline: bool | None = None) -> Path:
    """The local path of a Hub file: from the cache, or downloaded into it.

    Args:
        hub_id: a :class:`HubId` or its ``hf://`` text.
        cache_dir: the cache folder (default: :func:`hub_cache_dir`).
        offline: read the cache only (default: :func:`hub_offline`).

    Raises:
        HubError: one line naming the id and the reason (not cached while offline, no such
            repository, file or revision, access refused, network failure).
    """
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError, GatedRepoError, HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    hub_id = parse_hub_id(hub_id) if isinstance(hub_id, str) else hub_id
    offline = hub_offline() if offline is None else offline
    cache = Path(cache_dir) if cache_dir is not None else hub_cache_dir()
    where = f"cache {cache}" if cache is not None else "the default Hugging Face cache"
    try:
        path = hf_hub_download(hub_id.repo_id, hub_id.filename, revision=hub_id.revision, cache_dir=cache,
                               local_files_only=offline, library_name="havic")
    # Order matters: the first three are subclasses of HfHubHTTPError, and gated of not-found.
    except GatedRepoError:
        raise HubError(f"{hub_id}: access to {hub_id.repo_id} is gated; accept its terms on the Hub and log in "
                       "(`hf auth login`)") from None
    except RepositoryNotFoundError:
        raise HubError(f"{hub_id}: no repository {hub_id.repo_id} on the Hub (or it is private)") from None
    except RevisionNotFoundError:
        raise HubError(f"{hub_id}: no revision {hub_id.revision!r} in {hub_id.repo_id}") from None
    except LocalEntryNotFoundError:
        reason = "HF_HUB_OFFLINE is set" if offline else "the Hub could not be reached"
        rev = f" --revision {hub_id.revision}" if hub_id.revision else ""
        raise HubError(f"{hub_id}: not in {where} and {reason}; fetch it once with network access "
                       f"(`hf download {hub_id.repo_id} {hub_id.filename}{rev}`)") from None
    except EntryNotFoundError:
        raise HubError(f"{hub_id}: no file {hub_id.filename!r} in {hub_id.repo_id}") from None
    except (HfHubHTTPError, OSError) as err:
        raise HubError(f"{hub_id}: download failed ({type(err).__name__}: {str(err).splitlines()[0]})") from None
    return Path(path)


def resolve_weights(path: str | os.PathLike) -> Path:
    """A local weights path: `path` itself, or the cached file of an ``hf://`` id (see :func:`download`)."""
    return download(path) if is_hub_id(path) else Path(path)
