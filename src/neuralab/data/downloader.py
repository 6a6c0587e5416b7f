"""Download a file from a list of mirrors, verified by sha256, written atomically.

The bytes go to a temp file next to ``dest`` and are hashed while streaming; only
a file whose hash matches is renamed to ``dest``. So ``dest`` either holds the
canonical bytes or does not exist: a crash, a bad mirror or a tampered file never
leaves something that a later run would trust.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import BinaryIO

from tqdm import tqdm

from neuralab.errors import UserError

TIMEOUT_S = 30.0  # per blocking socket operation, not for the whole file
CHUNK = 1 << 20
USER_AGENT = "neuralab"  # some servers refuse urllib's default agent


class _MirrorFailed(Exception):
    """One mirror did not give us the right bytes; the next one may."""


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__


def _stream(url: str, tmp: BinaryIO, sha256: str, label: str) -> None:
    """Copy ``url`` into the open file ``tmp``; raise _MirrorFailed unless the hash matches."""
    digest = hashlib.sha256()
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
            total = response.headers.get("Content-Length")
            with tqdm(
                total=int(total) if total else None,
                unit="B",
                unit_scale=True,
                desc=label,
                file=sys.stderr,
                leave=False,
            ) as bar:
                while chunk := response.read(CHUNK):
                    digest.update(chunk)
                    tmp.write(chunk)
                    bar.update(len(chunk))
    except (OSError, ValueError, http.client.HTTPException) as err:  # URLError is an OSError
        raise _MirrorFailed(_one_line(err)) from None
    got = digest.hexdigest()
    if got != sha256:
        raise _MirrorFailed(f"sha256 mismatch: expected {sha256}, got {got}")


def download(urls: list[str], dest: Path, sha256: str) -> Path:
    """Fetch ``dest`` from the first of ``urls`` that yields bytes with this sha256.

    Supports http(s):// and file:// URLs. On failure nothing is left at ``dest``
    or beside it, and the UserError names the file and what every mirror said.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    errors = []
    for url in urls:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
        try:
            with os.fdopen(fd, "wb") as tmp:
                _stream(url, tmp, sha256, dest.name)
            os.chmod(tmp_name, 0o644)  # mkstemp made it private; datasets may be shared
            os.replace(tmp_name, dest)
            return dest
        except _MirrorFailed as err:
            errors.append(f"{url}: {err}")
        finally:
            if os.path.exists(tmp_name):
                os.unlink(tmp_name)
    tried = "; ".join(errors) or "no mirror given"
    raise UserError(f"could not download {dest.name} to {dest.parent}: {tried}")
