"""Fetch checkpoint files from https:// URLs and hf:// repos into the cache, verified by sha256."""
from __future__ import annotations

import os
import urllib.error
import urllib.request
from pathlib import Path

from .io import sha256_file

CHUNK = 1 << 16


class OfflineError(ConnectionError):
    """A remote file could not be fetched; the message says what to download and where to put it."""


def download(url: str, dest: str | os.PathLike, *, sha256: str | None = None, timeout: float = 30.0,
             progress: bool = True) -> Path:
    """Download ``url`` to ``dest``: a progress bar, a socket timeout, resume of a partial
    ``dest.part`` with an HTTP Range request, then a sha256 check and an atomic rename.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "kdzoo"})
    if have:
        request.add_header("Range", f"bytes={have}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:  # the partial file is already complete
            response = None
        else:
            raise OfflineError(f"could not download {url}: HTTP {e.code} {e.reason}") from None
    except (urllib.error.URLError, TimeoutError, OSError) as e:
        raise OfflineError(f"could not download {url}: {getattr(e, 'reason', e)}") from None
    if response is not None:
        with response:
            resumed = have and response.status == 206
            if not resumed:
                have = 0
            total = response.length + have if response.length is not None else None
            bar = None
            if progress:
                from tqdm.auto import tqdm
                bar = tqdm(total=total, initial=have, unit="B", unit_scale=True, desc=dest.name)
            try:
                with open(part, "ab" if resumed else "wb") as f:
                    while block := response.read(CHUNK):
                        f.write(block)
                        if bar is not None:
                            bar.update(len(block))
            except (TimeoutError, OSError) as e:
                raise OfflineError(f"download of {url} interrupted ({e}); run again to resume from {part}") from None
            finally:
                if bar is not None:
                    bar.close()
    if sha256 is not None:
        actual = sha256_file(part)
        if actual != sha256:
            part.unlink()
            raise ValueError(f"sha256 mismatch for {url}: expected {sha256}, got {actual}; the download was deleted")
    os.replace(part, dest)
    return dest


def hf_download(repo: str, filename: str, dest_dir: str | os.PathLike, revision: str | None = None) -> Path:
    """Fetch ``filename`` of Hugging Face Hub repo ``repo`` through huggingface_hub into ``dest_dir``; when the
    Hub cannot be reached (offline: no connection opens in 3 s), the copy already in ``dest_dir`` is used without a
    request.

    Raises OfflineError naming the file and the cause when it can be neither fetched nor found locally."""
    try:
        from huggingface_hub import hf_hub_download
    except ImportError as e:  # pragma: no cover - huggingface_hub is a core dependency
        raise OfflineError("hf:// sources need `pip install huggingface_hub`") from e
    except ValueError as e:  # huggingface_hub parses $HF_ENDPOINT when it is imported
        raise OfflineError(f"huggingface_hub cannot start: {e} (is $HF_ENDPOINT={os.environ.get('HF_ENDPOINT')!r} "
                           "a URL?)") from None
    endpoint = _hub_endpoint()
    offline = not _reachable(endpoint)  # huggingface_hub retries an unreachable Hub for ~25 s: the local copy only
    try:
        path = hf_hub_download(repo_id=repo, filename=filename, revision=revision, local_dir=str(dest_dir),
                               local_files_only=offline)
    except Exception as e:  # huggingface_hub raises many connection/lookup error types
        if offline and type(e).__name__ == "LocalEntryNotFoundError":
            raise OfflineError(f"could not fetch {filename} from hf://{repo}: the Hub ({endpoint}) cannot be reached "
                               f"from here, and no copy is in {dest_dir}") from None
        first = (str(e).strip().splitlines() or [""])[0]
        raise OfflineError(f"could not fetch {filename} from hf://{repo}: {type(e).__name__}: {first}") from None
    return Path(path)


def _hub_endpoint() -> str:
    """The Hugging Face Hub endpoint in use (``$HF_ENDPOINT``, else https://huggingface.co)."""
    from huggingface_hub import constants

    return constants.ENDPOINT


def _reachable(endpoint: str, timeout: float = 3.0) -> bool:
    """Whether a TCP connection to ``endpoint``'s host and port opens within ``timeout`` seconds (nothing is
    sent); False for an endpoint that is not a URL with a host."""
    import socket
    from urllib.parse import urlparse

    try:
        url = urlparse(endpoint)
        host, port = url.hostname, url.port or (80 if url.scheme == "http" else 443)
    except ValueError:  # e.g. an invalid IPv6 literal or port
        return False
    if not host:
        return False
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except (OSError, UnicodeError):
        return False
    return True
