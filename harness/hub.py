"""The Hugging Face hub, in one place: what a model id names, whether the hub is offline or reachable, loading
and snapshotting with local files first, and the one-line error for a model that is neither here nor fetchable.

A model id is `embedded:NAME` (the zoo's weights; loaded by harness.models), a local folder, or a hub id. The
hub is asked only for a hub id whose files are not cached, when HF_HUB_OFFLINE is unset and the endpoint answers
a quick probe (a closed network fails in seconds instead of after huggingface_hub's ~30 s of retries).
Datasets (harness.data) and models (harness.models, harness.captioner) share this module's offline predicate.
"""
from __future__ import annotations

import logging
import os
import socket
from pathlib import Path
from urllib.parse import urlparse
from urllib.request import getproxies, proxy_bypass

from huggingface_hub import constants

from harness import HarnessError

EMBEDDED = "embedded:"


# --- model ids ----------------------------------------------------------------------------------------------


def embedded_name(model_id: str) -> str | None:
    """The zoo name of an `embedded:NAME` id; None for a local folder or a hub id."""
    return model_id.removeprefix(EMBEDDED) if model_id.startswith(EMBEDDED) else None


def is_local(model_id: str) -> bool:
    """Whether the id is a path that exists here (a local folder is never looked up on the hub)."""
    return Path(model_id).exists()


# --- the hub's state ----------------------------------------------------------------------------------------


def hub_offline() -> bool:
    """HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) exactly as huggingface_hub parsed it when it was imported: its own
    value, so 1/on/yes/true in any case mean offline for datasets and models alike, and nothing here can disagree
    with what transformers and datasets then do."""
    return bool(constants.HF_HUB_OFFLINE)


def hub_endpoint():
    """The hub URL huggingface_hub talks to, for probes and messages."""
    return urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))


def hub_reachable(timeout: float = 3.0) -> bool:
    """A quick TCP probe of the hub endpoint, so a closed network fails in seconds, not after huggingface_hub's
    ~25 s of retries. Behind a proxy only a real request can tell, so that counts as reachable."""
    url = hub_endpoint()
    if getproxies().get(url.scheme) and not proxy_bypass(url.hostname):
        return True
    try:
        socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)),
                                 timeout=timeout).close()
        return True
    except OSError:
        return False


def hub_logs_once() -> None:
    """huggingface_hub gives its logger a stderr handler of its own *and* lets it propagate, so once Hydra has
    configured the root logger every retry warning prints twice: drop the library's handler, keep Hydra's.
    httpx (httpx2 in some huggingface_hub builds) logs every request at INFO, which Hydra's root level shows."""
    for name in ("httpx", "httpx2"):
        logging.getLogger(name).setLevel(logging.WARNING)
    hub = logging.getLogger("huggingface_hub")
    if logging.getLogger().handlers:
        for handler in list(hub.handlers):
            hub.removeHandler(handler)


# --- the missing-model error --------------------------------------------------------------------------------


def unreachable(err: BaseException | None) -> bool:
    """Whether a hub error comes from a connection that failed: huggingface_hub wraps the socket's error
    (refused, unknown host, timeout) in its own (LocalEntryNotFoundError), and transformers that in an OSError."""
    while err is not None:
        if isinstance(err, (ConnectionError, socket.gaierror, TimeoutError)):
            return True
        err = err.__cause__ or err.__context__
    return False


def missing_model(model_id: str, err: BaseException | None) -> HarnessError:
    """The missing-model error with its cause; err None: the hub did not answer the probe."""
    how = (f"Fetch it on a machine with hub access:\n    hf download {model_id}\n"
           f"then copy the Hugging Face cache (~/.cache/huggingface/hub) here, or point the pair at a local folder "
           f"(pair.target.id=/path/to/model).")
    if hub_offline():
        cause = "HF_HUB_OFFLINE is set, so nothing was downloaded."
    elif err is None or unreachable(err):
        cause = (f"The Hugging Face hub ({hub_endpoint().hostname}) could not be reached; HF_HUB_OFFLINE=1 skips "
                 f"trying it (and its retries).")
    else:
        cause = f"({type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ''})."
    return HarnessError(f"model {model_id!r} is not available locally and could not be downloaded. {cause} {how}")


def try_hub(model_id: str, err: BaseException) -> None:
    """Raise the missing-model error unless a download is worth trying: online, and the hub answers a probe."""
    if hub_offline():
        raise missing_model(model_id, err) from None
    if not hub_reachable():
        raise missing_model(model_id, None) from None
    hub_logs_once()


# --- loading and snapshots ----------------------------------------------------------------------------------


def from_hf(cls, model_id: str, **kwargs):
    """`cls.from_pretrained(model_id)` (a transformers Auto class): local files first; the hub only for a hub id
    when online."""
    try:
        return cls.from_pretrained(model_id, local_files_only=True, **kwargs)
    except OSError as err:
        if is_local(model_id):
            raise HarnessError(f"{model_id} exists but cannot be loaded as a model: {err}") from None
        try_hub(model_id, err)
    try:
        return cls.from_pretrained(model_id, **kwargs)
    except OSError as err:
        raise missing_model(model_id, err) from None


def snapshot(model_id: str) -> Path:
    """The folder of a local folder or hub id: the folder itself, else the hub id's cached snapshot (downloaded
    only when online)."""
    if is_local(model_id):
        return Path(model_id)
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(model_id, local_files_only=True))
    except Exception as err:  # not cached (LocalEntryNotFoundError) or not a valid id
        try_hub(model_id, err)
    try:
        return Path(snapshot_download(model_id))
    except Exception as err:
        raise missing_model(model_id, err) from None
