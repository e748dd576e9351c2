"""Files of Hugging Face hub repositories (models and datasets) at a pinned revision: the local cache
first, then the network, else one error that says what was tried and the command that fetches the file.

    from dalib.hub import hub_file
    from dalib.shards import file_sha256
    path = hub_file("depth-anything/Depth-Anything-V2-Small", "depth_anything_v2_vits.pth",
                    revision="c39ba42370cc2915c194638f9fa23d5cecf6f410")      # -> Path in the HF cache
    file_sha256(path)                                                        # its sha256, to record or check
    hub_file(..., sha256="...")                                              # or checked on the way

The cache is huggingface_hub's own (`<cache>/models--owner--name/snapshots/<revision>/<file>`), found at call
time from $HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub; with $HF_HUB_OFFLINE set only the
cache is looked at. A revision must be a full 40-hex commit hash: the hub resolves no short hashes, and a
branch name would let the bytes change under a recorded result. Used by `dalib.data` (hub datasets), the
zero-shot evaluation of notebook 07 (the official weights) and the DINOv2 encoder weights.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import huggingface_hub
from huggingface_hub import HfFileSystem, hf_hub_download

from dalib.shards import file_sha256

REPO_TYPES = ("model", "dataset")
_COMMIT = re.compile(r"[0-9a-f]{40}")
_TRUE = ("1", "true", "yes", "on")


class HubFileError(RuntimeError):
    """A hub file is neither in the local cache nor downloadable; the message says what to run."""


def hub_cache_dir() -> Path:
    """huggingface_hub's cache folder as the environment names it now ($HF_HUB_CACHE, $HF_HOME/hub, default)."""
    if os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE"):
        return Path(os.environ.get("HF_HUB_CACHE") or os.environ["HUGGINGFACE_HUB_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "huggingface"
    return Path(home).expanduser() / "hub"


def is_offline() -> bool:
    """Is $HF_HUB_OFFLINE (or $HF_DATASETS_OFFLINE) set: the cache only, no network."""
    return any(os.environ.get(v, "").lower() in _TRUE for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))


def download_command(repo_id: str, filename: str, revision: str, repo_type: str = "model") -> str:
    """The one shell command that puts the file into the cache (`hf`, or `huggingface-cli` before hub 0.34)."""
    major, minor = (int(x) for x in re.findall(r"\d+", huggingface_hub.__version__)[:2])
    cli = "hf" if (major, minor) >= (0, 34) else "huggingface-cli"
    kind = f" --repo-type {repo_type}" if repo_type != "model" else ""
    return f"{cli} download {repo_id} {filename}{kind} --revision {revision}"


def hub_url(repo_id: str, filename: str, revision: str, repo_type: str = "model") -> str:
    """The `hf://` address of the file at the revision (for streaming reads through huggingface_hub's fsspec)."""
    prefix = "datasets/" if repo_type == "dataset" else ""
    return f"hf://{prefix}{repo_id}@{revision}/{filename}"


def open_remote(repo_id: str, filename: str, revision: str, repo_type: str = "model"):
    """A seekable read-only file object on the hub's copy (HTTP range reads: only the bytes read are fetched;
    nothing enters the cache). For reading the first rows of a large parquet file; HubFileError when offline."""
    check_ref(repo_id, filename, revision, repo_type)
    if is_offline():
        raise HubFileError(f"hub {repo_type} {repo_id}, file {filename}, revision {revision}: cannot be streamed "
                           f"offline ($HF_HUB_OFFLINE is set). Fetch it with: "
                           f"{download_command(repo_id, filename, revision, repo_type)}")
    return HfFileSystem().open(hub_url(repo_id, filename, revision, repo_type).removeprefix("hf://"), "rb")


def check_ref(repo_id: str, filename: str, revision: str, repo_type: str = "model") -> None:
    """ValueError naming the bad value when a file reference is malformed (repo, type, revision)."""
    if not isinstance(repo_id, str) or not re.fullmatch(r"[\w.-]+/[\w.-]+", repo_id):
        raise ValueError(f"hub repo {repo_id!r}: expected 'owner/name'")
    if repo_type not in REPO_TYPES:
        raise ValueError(f"hub repo {repo_id}: repo_type {repo_type!r}, expected one of {', '.join(REPO_TYPES)}")
    if not isinstance(revision, str) or not _COMMIT.fullmatch(revision):
        raise ValueError(f"hub file {repo_id}/{filename}: revision {revision!r} is not a full 40-hex commit hash "
                         "(the hub resolves no short hashes; a branch name is not pinned)")


def hub_file(repo_id: str, filename: str, revision: str, *, repo_type: str = "model", sha256: str | None = None,
             local_only: bool | None = None) -> Path:
    """Path of `filename` of hub repo `repo_id` at commit `revision`: from the local cache when there, else
    downloaded into it (unless offline, or `local_only=True`). `sha256`: the expected digest, checked when given.

    Raises HubFileError naming the repo, file and revision, where it looked, why the network failed (or that
    it was not tried) and the command that downloads the file. Taught in notebook 07_evaluation.
    """
    check_ref(repo_id, filename, revision, repo_type)
    cache = hub_cache_dir()
    local_only = is_offline() if local_only is None else local_only
    ref = f"{repo_type} {repo_id}, file {filename}, revision {revision}"
    try:
        path = Path(hf_hub_download(repo_id, filename, repo_type=repo_type, revision=revision, cache_dir=cache,
                                    local_files_only=True))
    except Exception:  # not cached (LocalEntryNotFoundError and kin): go on to the network
        path = None
    if path is None:
        why = "offline ($HF_HUB_OFFLINE is set)" if is_offline() else "the network was not asked (local_only=True)"
        if not local_only:
            try:
                path = Path(hf_hub_download(repo_id, filename, repo_type=repo_type, revision=revision,
                                            cache_dir=cache))
            except Exception as e:  # network, auth, missing file or revision: one message that says what to do
                why = f"download failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        if path is None:
            raise HubFileError(f"hub {ref}: not in the cache {cache} and {why}. Fetch it with: "
                               f"{download_command(repo_id, filename, revision, repo_type)}")
    if sha256 is not None and (digest := file_sha256(path)) != sha256:
        raise HubFileError(f"hub {ref}: {path} has sha256 {digest}, expected {sha256}; delete it and fetch it "
                           f"again with: {download_command(repo_id, filename, revision, repo_type)}")
    return path
