"""Is a Hugging Face hub file on disk, and is the hub reachable: asked without waiting.

huggingface_hub reads HF_HUB_OFFLINE once, at import, and retries for tens of seconds
before failing offline; these read the environment as it is now and probe for seconds,
so missing weights fail fast with one line (used by CLIP and BLIP loading).
"""

from __future__ import annotations

import os
import socket

#: How long the reachability probe waits before calling the machine offline.
PROBE_TIMEOUT_S = 3.0


def _truthy_env(name: str) -> bool:
    return os.environ.get(name, "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def hub_offline() -> bool:
    """HF_HUB_OFFLINE read now (huggingface_hub reads it only when first imported)."""
    if _truthy_env("HF_HUB_OFFLINE") or _truthy_env("TRANSFORMERS_OFFLINE"):
        return True
    try:
        from huggingface_hub import constants
    except ImportError:
        return False
    return bool(constants.HF_HUB_OFFLINE)


def host_reachable(host: str, timeout: float = PROBE_TIMEOUT_S) -> bool:
    """A TCP connection to host:443 within ``timeout``: a fast stand-in for hub retries."""
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def hf_cache_dir() -> str:
    """The Hugging Face hub cache, from the environment as it is now."""
    if os.environ.get("HF_HUB_CACHE"):
        return os.path.expanduser(os.environ["HF_HUB_CACHE"])
    if os.environ.get("HF_HOME"):
        return os.path.join(os.path.expanduser(os.environ["HF_HOME"]), "hub")
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(xdg, "huggingface", "hub")


def cached_hub_file(repo_id: str, filenames: list[str]) -> str | None:
    """The first of ``filenames`` already in the hub cache, without touching the network."""
    from huggingface_hub import try_to_load_from_cache

    for name in filenames:
        found = try_to_load_from_cache(repo_id, name, cache_dir=hf_cache_dir())
        if isinstance(found, str) and os.path.isfile(found):
            return found
    return None
