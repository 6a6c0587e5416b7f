"""Where datasets live: the search roots, ``locate`` and ``fetch``.

Dataset ``name`` lives in ``<root>/<name>/`` under its canonical file names. The
roots are searched in a fixed order so that an explicit choice (``--data-dir``,
``NEURALAB_DATA``) always wins over the cache, and the cache over the system-wide
copies that Debian's ``dataset-*`` packages install in /usr/share/datasets.
Local files are validated by the readers, not by checksum: Debian re-gzipped them,
so their bytes differ from the canonical downloads that ``fetch`` verifies.
"""

from __future__ import annotations

import os
from pathlib import Path

from neuralab.data.downloader import download
from neuralab.data.spec import DATASETS
from neuralab.errors import UserError

SYSTEM_ROOT = Path("/usr/share/datasets")  # module-level so tests can point it elsewhere


def _env_path(var: str) -> Path | None:
    value = os.environ.get(var)
    return Path(value).expanduser() if value else None


def cache_root() -> Path:
    """The user cache: $NEURALAB_CACHE, else $XDG_CACHE_HOME/neuralab, else ~/.cache/neuralab."""
    explicit = _env_path("NEURALAB_CACHE")
    if explicit is not None:
        return explicit
    xdg = _env_path("XDG_CACHE_HOME") or Path.home() / ".cache"
    return xdg / "neuralab"


def search_roots(data_dir: str | Path | None = None) -> list[tuple[str, Path]]:
    """The places searched for datasets, in order, each as (label, root)."""
    roots = []
    if data_dir is not None:
        roots.append(("data_dir", Path(data_dir).expanduser()))
    elif (env := _env_path("NEURALAB_DATA")) is not None:
        roots.append(("NEURALAB_DATA", env))
    roots.append(("cache", cache_root()))
    roots.append(("system", SYSTEM_ROOT))
    return roots


def package_dirs(sub: str, system: Path, data_dir: str | Path | None = None) -> list[Path]:
    """Where data that a Debian package installs at ``system`` is looked for: ``<root>/<sub>``
    under the roots the user names (``data_dir``, else ``NEURALAB_DATA``) and the cache,
    then ``system``."""
    return [root / sub for label, root in search_roots(data_dir) if label != "system"] + [system]


def find(name: str, data_dir: str | Path | None = None) -> tuple[str, Path]:
    """(label of the root, dataset directory) of the first complete copy of ``name``."""
    spec = DATASETS.get(name)
    if data_dir is not None and not Path(data_dir).expanduser().is_dir():
        raise UserError(f"data directory {data_dir} does not exist (--data-dir, data.data_dir)")
    if spec.bundled is not None:
        return "bundled", spec.bundled()
    searched = []
    for label, root in search_roots(data_dir):
        directory = root / name
        missing = spec.missing_in(directory) if directory.is_dir() else None
        if missing == []:
            return label, directory
        note = f" (incomplete, lacks {', '.join(missing)})" if missing else ""
        searched.append(f"{label} {directory}{note}")
    raise UserError(
        f"dataset {name!r} not found; searched {', '.join(searched)}; to get it: "
        f"{spec.how_to_get}; or pass --data-dir DIR (or set NEURALAB_DATA=DIR) "
        f"where DIR/{name}/ holds its files"
    )


def locate(name: str, data_dir: str | Path | None = None) -> Path:
    """The first directory holding all of ``name``'s files; UserError saying how to get it."""
    return find(name, data_dir)[1]


def fetch(name: str, data_dir: str | Path | None = None, *, urls: list[str] | None = None) -> Path:
    """Download every missing canonical file of ``name`` into the cache (or ``data_dir``).

    Each file comes from its mirrors in order and is verified by sha256. ``urls``
    replaces the mirrors by base URLs that each hold the canonical file names (tests
    use a local server). Returns the dataset directory.
    """
    spec = DATASETS.get(name)
    if spec.bundled is not None:
        return spec.bundled()
    directory = (Path(data_dir).expanduser() if data_dir is not None else cache_root()) / name
    for file in spec.files:
        if file.present_in(directory):
            continue
        mirrors = [f"{base.rstrip('/')}/{file.name}" for base in urls] if urls else file.urls
        download(list(mirrors), directory / file.name, file.sha256)
    return directory


def located(name: str, data_dir: str | Path | None, download: bool) -> tuple[str, Path]:
    """(label of the root, directory) of ``name``, fetched first if missing and ``download``."""
    try:
        return find(name, data_dir)
    except UserError:
        if not download:
            raise
    fetch(name, data_dir)
    return find(name, data_dir)
