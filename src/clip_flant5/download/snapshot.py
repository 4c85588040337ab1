"""Hub models fetched once, where the network is: `fetch_model` puts a pinned snapshot of a Hugging Face model
repository into a local folder that compute jobs then read with `HF_HUB_OFFLINE=1`.

Only the files a run needs are fetched (`ROLES`): a published CLIP-FlanT5 checkpoint, a base model's weights, a
tokenizer, a stage-1 projector; weights in one format (safetensors where the repository has them, else the
PyTorch `.bin` files), never TF/Flax copies. The revision a run asks for (a branch, tag or commit; config
`hub.revisions`) resolves to a commit that is recorded in `config/models.lock.json`; later fetches take the
locked commit, so a rerun gets the same bytes, and an upstream branch that moved since is reported (log and
record), not used, until the lock is refreshed deliberately (`refresh_lock`) or the config names another revision.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from ..atomic import write_json
from ..sources import folder_lock
from .errors import DownloadError

log = logging.getLogger(__name__)

DEFAULT_MODELS_LOCK = Path("config/models.lock.json")  # the checkout's, relative to where the workflow runs
MARKER_NAME = ".clip-flant5-hub.json"  # in each snapshot folder: which repository and commit it holds
TOKENIZER_FILES = ("spiece.model", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "added_tokens.json")  # fmt: skip
# What each use of a repository needs. "weights" stands for the model weights in one format (see _weights).
ROLES = {
    "checkpoint": ("config.json", "generation_config.json", *TOKENIZER_FILES, "weights"),  # a CLIP-FlanT5 to score
    "base": ("config.json", "generation_config.json", "preprocessor_config.json", *TOKENIZER_FILES, "weights"),
    "tokenizer": ("config.json", *TOKENIZER_FILES),
    "projector": ("config.json", "mm_projector.bin"),  # a published stage-1 output
}
REQUIRED = {"checkpoint": ("config.json",), "base": ("config.json",), "tokenizer": ("spiece.model",),
            "projector": ("mm_projector.bin",)}  # fmt: skip
WEIGHT_FORMATS = (  # in order of preference: (weight files, index)
    ("model*.safetensors", "model.safetensors.index.json"),
    ("pytorch_model*.bin", "pytorch_model.bin.index.json"),
)


class ModelFetchError(DownloadError):
    pass


@dataclass(frozen=True)
class LockedModel:
    revision: str  # what was asked for
    commit: str  # what it resolved to


def read_models_lock(path: str | os.PathLike = DEFAULT_MODELS_LOCK) -> dict[str, LockedModel]:
    path = Path(path)
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
        return {repo: LockedModel(str(e["revision"]), str(e["commit"])) for repo, e in data["models"].items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise ModelFetchError(
            f"the model lock {path} is unreadable or malformed ({err!r}); restore it from git"
        ) from err


def update_models_lock(path: str | os.PathLike, repo: str, entry: LockedModel) -> None:
    path = Path(path)
    with folder_lock(path.parent):  # parallel fetch jobs must not lose each other's entries
        current = read_models_lock(path)
        current[repo] = entry
        body = {
            "version": 1,
            "comment": "the commit each hub model's revision resolved to on first fetch (clip_flant5.download."
            "snapshot); later fetches take it; refresh an entry deliberately with `clip-flant5 fetch-model "
            "--refresh-lock`",
            "models": {r: {"revision": e.revision, "commit": e.commit} for r, e in sorted(current.items())},
        }
        write_json(path, body, fsync=True)


def snapshot_dir(root: str | os.PathLike, repo: str) -> Path:
    return Path(root) / repo


def hub_origin(path: str | os.PathLike) -> str | None:
    """The repository id a snapshot folder made by `fetch_model` holds (None for any other folder)."""
    marker = Path(path) / MARKER_NAME
    try:
        return json.loads(marker.read_text())["repo"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def select_files(repo: str, available: list[str], roles: list[str]) -> list[str]:
    """The files of `available` (a repository listing) that `roles` need; raises naming what is missing."""
    unknown = sorted(set(roles) - set(ROLES))
    if unknown or not roles:
        raise ModelFetchError(f"unknown model role(s) {unknown or roles}; valid: {', '.join(ROLES)}")
    present = set(available)
    chosen: set[str] = set()
    for role in roles:
        missing = [f for f in REQUIRED[role] if f not in present]
        if missing:
            raise ModelFetchError(f"{repo} has no {', '.join(missing)}: it cannot serve as a {role} (files: "
                                  f"{', '.join(sorted(present)) or 'none'})")  # fmt: skip
        for name in ROLES[role]:
            if name == "weights":
                chosen.update(_weights(repo, available))
            elif name in present:
                chosen.add(name)
    return sorted(chosen)


def _weights(repo: str, available: list[str]) -> list[str]:
    for pattern, index in WEIGHT_FORMATS:
        files = [f for f in available if "/" not in f and fnmatch.fnmatch(f, pattern)]
        if files:
            return files + ([index] if index in available else [])
    raise ModelFetchError(f"{repo} holds no model weights (*.safetensors or pytorch_model*.bin) at the top level")


def fetch_model(
    repo: str,
    root: str | os.PathLike,
    *,
    revision: str = "main",
    roles: list[str] = ("checkpoint",),
    lock_path: str | os.PathLike = DEFAULT_MODELS_LOCK,
    refresh_lock: bool = False,
) -> dict:
    """Snapshot the files of `repo` that `roles` need into `<root>/<repo>` and return a record
    {repo, revision, commit, upstream_commit, path, files}. The commit is the lock's when it has one for this
    revision (an upstream branch that moved is reported in the log and as `upstream_commit`), else the one
    `revision` resolves to now, which is then recorded. Raises ModelFetchError with what to do."""
    from huggingface_hub import HfApi, snapshot_download
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError, RevisionNotFoundError

    locked = None if refresh_lock else read_models_lock(lock_path).get(repo)
    if locked is not None and locked.revision != revision:
        locked = None  # the config asks for another revision: a deliberate change
    api = HfApi()

    def listing(rev: str):
        try:
            return api.model_info(repo, revision=rev)
        except GatedRepoError as err:
            raise ModelFetchError(f"{repo} is gated: accept its terms on huggingface.co and log in "
                                  f"(`hf auth login`), then rerun ({err})") from err  # fmt: skip
        except RepositoryNotFoundError as err:
            raise ModelFetchError(f"no model repository {repo} on the hub (or it is private: log in)") from err
        except RevisionNotFoundError as err:
            raise ModelFetchError(f"{repo} has no revision {rev!r}: set another one in the config "
                                  "(hub.revisions) or refresh the lock (--refresh-lock)") from err  # fmt: skip
        except Exception as err:  # network, offline mode, HTTP errors: one clear error
            raise ModelFetchError(f"cannot reach the hub for {repo}@{rev} ({type(err).__name__}: {err}); "
                                  "fetch models where the network is (they are local rules)") from err  # fmt: skip

    upstream = listing(revision)
    commit = locked.commit if locked else upstream.sha
    info = upstream
    if locked and upstream.sha != locked.commit:
        log.warning("%s: %r is now at %s upstream; the lock (%s) pins %s, which is what is fetched. To move to the new "
                    "commit: clip-flant5 fetch-model %s --refresh-lock", repo, revision, upstream.sha, lock_path,
                    locked.commit, repo)  # fmt: skip
        info = listing(locked.commit)
    files = select_files(repo, [s.rfilename for s in info.siblings or []], list(roles))
    dest = snapshot_dir(root, repo)
    with folder_lock(dest):
        try:
            snapshot_download(repo, revision=commit, local_dir=dest, allow_patterns=files)
        except Exception as err:
            raise ModelFetchError(f"downloading {repo}@{commit} into {dest} failed ({type(err).__name__}: {err}); "
                                  "rerun to resume") from err  # fmt: skip
        if missing := [f for f in files if not (dest / f).is_file()]:
            raise ModelFetchError(f"{repo}@{commit}: {', '.join(missing)} missing in {dest} after the download")
        record = {"repo": repo, "revision": revision, "commit": commit, "upstream_commit": upstream.sha,
                  "path": str(dest), "roles": sorted(roles), "files": files}  # fmt: skip
        write_json(dest / MARKER_NAME, record)
    if locked is None:
        update_models_lock(lock_path, repo, LockedModel(revision, commit))
    return record
