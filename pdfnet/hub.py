"""The published models and the Hugging Face Hub they come from: PDFNet's weights (:data:`PRETRAINED`) and the
Depth-Anything-V2 depth models (:data:`DEPTH_MODELS`), by name.

The Hub is asked only when it can answer: cached files are used as they are, and a machine that cannot reach the
Hub is found out in a few seconds, so that the error (what is missing, how to fetch it elsewhere) comes at once
instead of after the Hub client's half-minute of retries. Nothing here imports torch: the command line checks its
sources before it loads the network's libraries.

Whether the Hub can be reached is decided once per process: ``HF_HUB_OFFLINE=1`` says no; otherwise a TCP
connection to the Hub (or to the HTTPS proxy in the environment) must open within :data:`CONNECT_TIMEOUT_S`.
"""

from __future__ import annotations

import os
import socket
import threading
from functools import cache
from urllib.parse import urlparse

from .errors import CheckpointError, DepthModelError, first_line

# Published weights by name: (Hugging Face repo, file). "base" is the paper's DIS-5K model (the release variant);
# "general" the authors' second checkpoint, trained on more data (DIS-5K and HRSOD, per the ComfyUI port).
PRETRAINED = {
    "base": ("Tennineee/PDFNet", "PDFNet_Best.pth"),
    "general": ("Tennineee/PDFNet-General", "PDF-Generally.pth"),
}
DEPTH_MODELS = {
    "small": "depth-anything/Depth-Anything-V2-Small-hf",
    "base": "depth-anything/Depth-Anything-V2-Base-hf",
    "large": "depth-anything/Depth-Anything-V2-Large-hf",
}
DEFAULT_DEPTH_MODEL = "large"
# The weights' licences: Small is Apache-2.0; Base and Large are for non-commercial use only.
DEPTH_LICENSES = {"small": "Apache-2.0", "base": "CC-BY-NC-4.0", "large": "CC-BY-NC-4.0"}
LICENSE_NOTE = (
    "Depth-Anything-V2-Base and -Large (the default, as in the paper) are licensed CC-BY-NC-4.0, for "
    "non-commercial use only; Depth-Anything-V2-Small is Apache-2.0: use --depth-model small for commercial work."
)
CONNECT_TIMEOUT_S = 3.0


def resolve_depth_model(name_or_path: str) -> str:
    """``small``/``base``/``large`` to their Hugging Face repos; anything else (a repo or a folder) unchanged."""
    return DEPTH_MODELS.get(name_or_path.lower(), name_or_path)


def download_weights(name: str = "base") -> str:
    """The path of published weights (:data:`PRETRAINED`), fetched once from the Hugging Face Hub into its cache.

    Raises:
        CheckpointError: an unknown name, or not in the cache and the Hub unreachable (said within seconds),
            naming the repository and file and how to fetch them elsewhere.
    """
    if name not in PRETRAINED:
        raise CheckpointError(f"unknown published weights {name!r}; expected one of {', '.join(PRETRAINED)}")
    repo_id, filename = PRETRAINED[name]
    try:
        return fetch_file(repo_id, filename)
    except Exception as e:  # the hub raises several unrelated types for "offline" and "not found"
        reason = first_line(e)
        raise CheckpointError(
            f"cannot fetch {filename} from the Hugging Face Hub repository {repo_id}: {reason}. On a machine with "
            f"internet, download it with `hf download {repo_id} {filename} --local-dir checkpoints` (or from "
            f"https://huggingface.co/{repo_id}/resolve/main/{filename}) and pass --weights checkpoints/{filename}"
        ) from None


def check_depth_model_source(name_or_path: str) -> bool:
    """Check, in a few seconds at most, that a depth model can be loaded from where it is named: a local
    folder or graph that exists, or a Hub repo that is in the cache or reachable. Returns whether transformers
    must load it from the cache alone (the Hub cannot be reached), so that it does not wait for the Hub first.

    Raises:
        DepthModelError: a folder that does not exist, or a Hub model neither cached nor reachable; the message
            says how to fetch it elsewhere and what to pass instead.
    """
    name = resolve_depth_model(name_or_path)
    if os.path.exists(name):
        return False
    if name.startswith((".", "/", "~")) or name.endswith(("/", ".onnx")) or name.count("/") > 1:
        raise DepthModelError(
            f"no depth model folder {name}: --depth-model takes small, base, large, a Hugging Face repo id or a "
            "local folder; or give ready-made depth maps with --depth"
        )
    try:
        return local_files_only(name)
    except OSError as e:
        folder = f"checkpoints/{name.split('/')[-1]}"
        raise DepthModelError(
            f"cannot load the depth model {name}: {e}. On a machine with internet, fetch it with "
            f"`hf download {name} --local-dir {folder}` (or save_pretrained) and pass --depth-model {folder} "
            "(Python: depth_model=); or give ready-made depth maps with --depth"
        ) from None


@cache
def hub_reachable() -> bool:
    """Whether this process can reach the Hugging Face Hub (asked once; :data:`CONNECT_TIMEOUT_S` at most)."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return False
    proxies = ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")
    proxy = next((os.environ[k] for k in proxies if os.environ.get(k)), "")
    target = urlparse(proxy if "://" in proxy else f"http://{proxy}") if proxy else urlparse(constants.ENDPOINT)
    host = target.hostname or "huggingface.co"
    port = target.port or (443 if target.scheme == "https" else 80)
    return _connects(host, port, CONNECT_TIMEOUT_S)


def _connects(host: str, port: int, timeout: float) -> bool:
    """Whether a TCP connection to ``host:port`` opens within ``timeout`` seconds, name lookup included (which
    a socket timeout does not bound: it runs in a thread that is left behind if it hangs)."""
    result: list[bool] = []

    def attempt() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=attempt, daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(result and result[0])


def cached_file(repo_id: str, filename: str) -> str | None:
    """The path of ``filename`` of ``repo_id`` in the Hugging Face cache, or None."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo_id=repo_id, filename=filename)
    return found if isinstance(found, str) else None


def fetch_file(repo_id: str, filename: str) -> str:
    """The local path of ``filename`` from ``repo_id``: the cached copy, else downloaded into the cache.

    Raises:
        OSError: the Hub cannot be reached (the message says so) or the download failed.
    """
    found = cached_file(repo_id, filename)
    if found is not None:
        return found
    if not hub_reachable():
        raise OSError(_unreachable())
    from huggingface_hub import hf_hub_download

    return hf_hub_download(repo_id=repo_id, filename=filename)


def local_files_only(repo_id: str) -> bool:
    """How transformers should load the model ``repo_id``: from the cache alone when the Hub cannot be reached
    (so that it does not wait for the Hub first), else from the Hub (which uses the cache too).

    Raises:
        OSError: the Hub cannot be reached and the model is not in the cache.
    """
    if hub_reachable():
        return False
    if cached_file(repo_id, "config.json") is None:
        raise OSError(_unreachable())
    return True


def _unreachable() -> str:
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return "HF_HUB_OFFLINE is set and it is not in the Hugging Face cache"
    return f"the Hugging Face Hub cannot be reached from here and it is not in the cache ({constants.HF_HUB_CACHE})"
