"""Whether a model can be loaded, answered in seconds, before anything calls ``from_pretrained``.

``from_pretrained`` on a hub id that is neither cached nor reachable retries the network for
about 30 s and then raises a long traceback. ``check_model(spec, role=...)`` answers first: a
local folder, or a hub id in the local Hugging Face cache, or (unless ``HF_HUB_OFFLINE=1``) a
hub that says the repository exists within ``HUB_TIMEOUT_S``. Otherwise it raises
``ModelNotAvailable`` whose message is one line: the model, where it was looked for and what to
do. Every loader (detector, captioner, Stage-1 CLIP, Stage-2 models, RM, rectify) and the web
app's forms call it, so a missing model reads the same everywhere.

``python -m training`` prints that line alone (no traceback) and exits with code 2.
"""

from __future__ import annotations

import os
import re
import urllib.error
import urllib.request
from pathlib import Path

HUB_TIMEOUT_S = 3.0
# A folder from_pretrained can read holds one of these (an adapter folder names its base).
MODEL_FILES = ("config.json", "adapter_config.json")
DEMO_HINT = "the demo models (`python manage.py make_demo_models`, then pick a demo-* model)"
# org/name or name, as the hub spells repository ids.
REPO_ID = re.compile(r"^(?:[A-Za-z0-9][\w.-]{0,95}/)?[A-Za-z0-9][\w.-]{0,95}$")


class ModelNotAvailable(OSError):
    """A model that is neither a local folder, nor cached, nor on a hub that answers.

    An ``OSError``, as ``from_pretrained``'s own failure is, so callers that already handle that
    keep working; the message is one line meant for the person who started the job.
    """


def check_model(spec: str, *, role: str = "model", offline: bool | None = None) -> str:
    """``spec`` itself when it can be loaded; ``ModelNotAvailable`` (one line) when not.

    ``role`` names the model in the message ("detector", "Stage-1 CLIP", "RM", ...). An
    endpoint spec (``URL#MODEL``) is returned as it is: the endpoint client reports on it.
    """
    spec = (spec or "").strip()
    if "://" in spec:
        return spec
    if not spec:
        raise ModelNotAvailable(f"cannot load {role}: no model was given; {_advice('MODEL')}")
    path = Path(spec).expanduser()
    if path.exists() or _looks_like_path(spec):
        if path.is_dir() and any((path / name).is_file() for name in MODEL_FILES):
            return spec
        reason = (
            f"the folder {path} holds no config.json"
            if path.is_dir()
            else f"there is no folder {path.resolve()}"
        )
        raise ModelNotAvailable(f"cannot load {role} {spec!r}: {reason}; {_advice(spec)}")
    if not REPO_ID.match(spec):
        raise ModelNotAvailable(
            f"cannot load {role} {spec!r}: neither a local folder nor a hub id (org/name); "
            f"{_advice(spec)}"
        )
    if in_local_cache(spec):
        return spec
    cache = _cache_dir()
    if _offline() if offline is None else offline:
        raise ModelNotAvailable(
            f"cannot load {role} {spec!r}: not a local folder and not in the Hugging Face cache "
            f"({cache}), and HF_HUB_OFFLINE=1 forbids the hub; {_advice(spec)}"
        )
    problem = hub_problem(spec)
    if problem is None:
        return spec
    raise ModelNotAvailable(
        f"cannot load {role} {spec!r}: not a local folder, not in the Hugging Face cache "
        f"({cache}), and {problem}; {_advice(spec)}"
    )


def in_local_cache(repo_id: str) -> bool:
    """Whether the hub cache holds a snapshot of ``repo_id`` (its config, or any file)."""
    from huggingface_hub import try_to_load_from_cache

    for name in MODEL_FILES:
        try:
            found = try_to_load_from_cache(repo_id, name, cache_dir=_cache_dir())
        except ValueError:  # not a valid repository id after all
            return False
        if isinstance(found, str):
            return True
    snapshots = Path(_cache_dir()) / f"models--{repo_id.replace('/', '--')}" / "snapshots"
    return snapshots.is_dir() and any(p.is_dir() and any(p.iterdir()) for p in snapshots.iterdir())


def hub_problem(repo_id: str, *, timeout_s: float = HUB_TIMEOUT_S) -> str | None:
    """None when the hub answers that ``repo_id`` exists; else what went wrong, in words."""
    from huggingface_hub import constants, get_token

    endpoint = os.environ.get("HF_ENDPOINT") or constants.ENDPOINT
    url = f"{endpoint.rstrip('/')}/api/models/{repo_id}"
    request = urllib.request.Request(url, method="HEAD")
    token = get_token()
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout_s):
            return None
    except urllib.error.HTTPError as error:
        if error.code in (401, 403, 404):
            return (
                f"the hub at {endpoint} has no repository {repo_id!r} this machine may read "
                f"(HTTP {error.code}; a gated model needs `huggingface-cli login`)"
            )
        return f"the hub at {endpoint} answered HTTP {error.code}"
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        return f"the hub at {endpoint} did not answer within {timeout_s:g} s ({reason})"


def _advice(spec: str) -> str:
    hub_id = spec if REPO_ID.match(spec) and not _looks_like_path(spec) else "<org/name>"
    return (
        f"give a local model folder, download it with `huggingface-cli download {hub_id}`, "
        f"or use {DEMO_HINT}"
    )


def _looks_like_path(spec: str) -> bool:
    return spec.startswith((".", "/", "~")) or os.sep in spec.strip("/").replace("/", "", 1)


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _cache_dir() -> str:
    from huggingface_hub import constants

    return os.environ.get("HF_HUB_CACHE") or constants.HF_HUB_CACHE
