"""Downloads: sha256 verification, atomic writes, mirror fallback, and ``fetch`` into the cache.

Everything is served from 127.0.0.1 or file:// URLs; no test touches the internet.
"""

from __future__ import annotations

import hashlib
import socket

import pytest
from datafakes import IDX_NAMES, http_server, sha256_of, tiny_spec, write_idx_dataset

from neuralab.data import DATASETS, RemoteFile, download, fetch, load, locate, store
from neuralab.errors import UserError

PAYLOAD = b"neuralab test payload\n" * 1000
PAYLOAD_SHA = hashlib.sha256(PAYLOAD).hexdigest()


@pytest.fixture
def served(tmp_path):
    """A directory with one file, served over HTTP; yields (base URL, directory)."""
    root = tmp_path / "served"
    root.mkdir()
    (root / "blob.bin").write_bytes(PAYLOAD)
    with http_server(root) as base:
        yield base, root


@pytest.fixture
def refused_url():
    """A URL on a local port where nothing listens (connection refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/blob.bin"


def test_download_http_ok(served, tmp_path):
    """With the right sha256 the file appears at dest, and nothing else is left beside it."""
    base, _ = served
    dest = tmp_path / "out" / "blob.bin"
    assert download([f"{base}/blob.bin"], dest, PAYLOAD_SHA) == dest
    assert dest.read_bytes() == PAYLOAD
    assert list(dest.parent.iterdir()) == [dest]


def test_download_file_url_ok(served, tmp_path):
    """file:// URLs work too (a local mirror, or a copy on a shared disk)."""
    _, root = served
    dest = tmp_path / "out" / "blob.bin"
    download([(root / "blob.bin").as_uri()], dest, PAYLOAD_SHA)
    assert dest.read_bytes() == PAYLOAD


@pytest.mark.parametrize("scheme", ["http", "file"])
def test_download_wrong_sha_leaves_nothing(served, tmp_path, scheme):
    """A hash mismatch is a UserError naming the file, expected and got hashes, and leaves no
    file at dest and no temp file in the directory."""
    base, root = served
    url = f"{base}/blob.bin" if scheme == "http" else (root / "blob.bin").as_uri()
    out = tmp_path / "out"
    with pytest.raises(UserError) as err:
        download([url], out / "blob.bin", "0" * 64)
    message = str(err.value)
    assert "blob.bin" in message and "0" * 64 in message and PAYLOAD_SHA in message
    assert "\n" not in message
    assert list(out.iterdir()) == []


def test_download_falls_back_to_next_mirror(served, tmp_path, refused_url):
    """A refused connection and a 404 on earlier mirrors do not stop a good later mirror."""
    base, _ = served
    dest = tmp_path / "out" / "blob.bin"
    download([refused_url, f"{base}/missing.bin", f"{base}/blob.bin"], dest, PAYLOAD_SHA)
    assert dest.read_bytes() == PAYLOAD
    assert list(dest.parent.iterdir()) == [dest]


def test_download_all_mirrors_fail(served, tmp_path, refused_url):
    """When every mirror fails, the one-line UserError reports each mirror's error."""
    base, _ = served
    out = tmp_path / "out"
    with pytest.raises(UserError) as err:
        download([refused_url, f"{base}/missing.bin"], out / "blob.bin", PAYLOAD_SHA)
    message = str(err.value)
    assert refused_url in message and f"{base}/missing.bin: HTTP Error 404" in message
    assert "\n" not in message
    assert list(out.iterdir()) == []


@pytest.fixture
def tiny_remote(tmp_path, monkeypatch):
    """A registered fake dataset 'tiny' whose canonical files are served over HTTP."""
    source = write_idx_dataset(tmp_path / "source")
    with http_server(source) as base:
        files = tuple(
            RemoteFile(n, (f"{base}/{n}",), sha256_of(source / n), 0, also=(n[:-3],))
            for n in IDX_NAMES
        )
        monkeypatch.setitem(DATASETS._entries, "tiny", tiny_spec(files=files))
        monkeypatch.setenv("NEURALAB_CACHE", str(tmp_path / "cache"))
        monkeypatch.delenv("NEURALAB_DATA", raising=False)
        monkeypatch.setattr(store, "SYSTEM_ROOT", tmp_path / "system")
        yield base


def test_fetch_then_load_from_cache(tiny_remote, tmp_path, refused_url):
    """fetch puts every file in the cache, verified; load then works from there, and a
    second fetch downloads nothing (it would fail: the only mirror is refused)."""
    with pytest.raises(UserError, match="not found"):
        locate("tiny")
    directory = fetch("tiny", urls=[tiny_remote])
    assert directory == tmp_path / "cache" / "tiny"
    assert sorted(p.name for p in directory.iterdir()) == sorted(IDX_NAMES)
    assert locate("tiny") == directory
    x, y = load("tiny", "test")
    assert x.shape == (10, 1, 4, 4) and y.tolist() == list(range(10))
    assert fetch("tiny", urls=[refused_url.rsplit("/", 1)[0]]) == directory


def test_fetch_into_data_dir_and_load_download(tiny_remote, tmp_path):
    """fetch honours data_dir; load(download=True) fetches from the spec's own mirrors."""
    assert fetch("tiny", tmp_path / "mine") == tmp_path / "mine" / "tiny"
    x, _ = load("tiny", "train", download=True)
    assert x.shape == (45, 1, 4, 4)
    assert (tmp_path / "cache" / "tiny" / IDX_NAMES[0]).exists()


def test_fetch_refuses_bad_mirror_bytes(tiny_remote, tmp_path):
    """A mirror serving other bytes than the canonical ones fails the fetch; no file is kept."""
    other = write_idx_dataset(tmp_path / "other", n_train=7)
    with http_server(other) as base, pytest.raises(UserError, match="sha256 mismatch"):
        fetch("tiny", urls=[base])
    assert not any((tmp_path / "cache" / "tiny").glob("train-images*"))


def test_load_without_download_explains(tiny_remote, tmp_path):
    """load of a missing dataset without download=True says how to get it and fetches nothing."""
    with pytest.raises(UserError, match="neuralab data fetch tiny"):
        load("tiny", "train")
    assert not (tmp_path / "cache").exists()
