"""Data loaders, offline: MNIST-1D is generated; the IDX loader is tested on small files the test writes,
served from file:// URLs, including a corrupted download (clear error, cache not poisoned)."""

from __future__ import annotations

import gzip
import hashlib
import pathlib

import numpy as np
import pytest

from igr_tutorial import data as D


def write_idx(path: pathlib.Path, array: np.ndarray) -> None:
    codes = {np.uint8: 0x08, np.int32: 0x0C, np.float32: 0x0D}
    header = bytes([0, 0, codes[array.dtype.type], array.ndim])
    header += b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    body = array.astype(array.dtype.newbyteorder(">")).tobytes()
    with gzip.open(path, "wb") as f:
        f.write(header + body)


def sha(path: pathlib.Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture()
def mirror(tmp_path):
    """A tiny MNIST-format data set (5 train, 3 test images of 4×3) in a folder served as file://."""
    rng = np.random.default_rng(0)
    served = tmp_path / "served"
    served.mkdir()
    arrays = {
        "train-images-idx3-ubyte.gz": rng.integers(0, 256, (5, 4, 3)).astype(np.uint8),
        "train-labels-idx1-ubyte.gz": rng.integers(0, 10, 5).astype(np.uint8),
        "t10k-images-idx3-ubyte.gz": rng.integers(0, 256, (3, 4, 3)).astype(np.uint8),
        "t10k-labels-idx1-ubyte.gz": rng.integers(0, 10, 3).astype(np.uint8),
    }
    for name, arr in arrays.items():
        write_idx(served / name, arr)
    checksums = {name: sha(served / name) for name in arrays}
    return served, checksums, arrays


def test_idx_round_trip_parses_shapes_and_types(tmp_path):
    for arr in [np.arange(24, dtype=np.uint8).reshape(2, 3, 4), np.array([1, -2, 3], dtype=np.int32),
                np.linspace(0, 1, 6, dtype=np.float32).reshape(3, 2)]:
        path = tmp_path / "a.idx.gz"
        write_idx(path, arr)
        np.testing.assert_array_equal(D.read_idx(path), arr)


def test_idx_rejects_bad_files(tmp_path):
    bad = tmp_path / "bad.gz"
    with gzip.open(bad, "wb") as f:
        f.write(b"\x01\x02\x08\x01" + (3).to_bytes(4, "big") + b"\x00\x00\x00")
    with pytest.raises(ValueError, match="magic"):
        D.read_idx(bad)
    truncated = tmp_path / "short.gz"
    with gzip.open(truncated, "wb") as f:
        f.write(b"\x00\x00\x08\x01" + (5).to_bytes(4, "big") + b"\x00\x00")
    with pytest.raises(ValueError, match="header says"):
        D.read_idx(truncated)


def test_download_verify_cache_and_load(mirror, tmp_path):
    served, checksums, arrays = mirror
    cache = tmp_path / "cache"
    ds = D.load_idx_dataset("tiny", checksums, [served.as_uri()], cache)
    assert ds.x_train.shape == (5, 12) and ds.x_test.shape == (3, 12)
    assert ds.x_train.dtype == np.float32 and 0 <= ds.x_train.min() and ds.x_train.max() <= 1
    np.testing.assert_allclose(ds.x_train * 255, arrays["train-images-idx3-ubyte.gz"].reshape(5, 12), atol=1e-4)
    np.testing.assert_array_equal(ds.y_test, arrays["t10k-labels-idx1-ubyte.gz"])
    # Second load uses the cache: it works with the mirror gone.
    for f in served.iterdir():
        f.unlink()
    again = D.load_idx_dataset("tiny", checksums, [served.as_uri()], cache)
    np.testing.assert_array_equal(again.y_train, ds.y_train)


def test_corrupted_download_is_rejected_and_not_cached(mirror, tmp_path):
    served, checksums, _ = mirror
    name = "train-labels-idx1-ubyte.gz"
    good = (served / name).read_bytes()
    (served / name).write_bytes(good[:-3] + b"xyz")  # the mirror now serves a corrupted file
    cache = tmp_path / "cache"
    with pytest.raises(D.ChecksumError, match=r"train-labels-idx1-ubyte.gz.*SHA-256.*expected.*discarded"):
        D.load_idx_dataset("tiny", checksums, [served.as_uri()], cache)
    assert not (cache / name).exists(), "a corrupted download must never enter the cache"
    assert not [p for p in cache.iterdir() if p.name.endswith(".part")], "no temporary file may be left"
    # Once the mirror is fixed, the same call succeeds.
    (served / name).write_bytes(good)
    assert D.load_idx_dataset("tiny", checksums, [served.as_uri()], cache).y_train.shape == (5,)


def test_corrupted_cache_entry_is_replaced(mirror, tmp_path):
    served, checksums, _ = mirror
    cache = tmp_path / "cache"
    D.load_idx_dataset("tiny", checksums, [served.as_uri()], cache)
    name = "t10k-images-idx3-ubyte.gz"
    (cache / name).write_bytes(b"garbage")
    D.load_idx_dataset("tiny", checksums, [served.as_uri()], cache)
    assert sha(cache / name) == checksums[name]


def test_unreachable_mirror_gives_a_clear_error(mirror, tmp_path):
    _, checksums, _ = mirror
    missing = (tmp_path / "nowhere").as_uri()
    with pytest.raises(ConnectionError, match="(?s)could not download.*load_mnist1d"):
        D.load_idx_dataset("tiny", checksums, [missing], tmp_path / "cache")


def test_load_mnist_rejects_unknown_kind():
    with pytest.raises(ValueError, match="kind must be one of"):
        D.load_mnist("cifar")


def test_pinned_checksums_are_sha256_hex():
    for kind, table in D.CHECKSUMS.items():
        assert set(table) == set(D.IDX_FILES)
        for digest in table.values():
            assert len(digest) == 64 and int(digest, 16) >= 0


def test_cache_directory_honours_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("IGR_TUTORIAL_CACHE", str(tmp_path / "c"))
    assert D.cache_directory() == tmp_path / "c"
    monkeypatch.delenv("IGR_TUTORIAL_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert D.cache_directory() == tmp_path / "x" / "igr_tutorial"


def test_mnist1d_is_generated_deterministically_and_leaves_numpy_rng_alone():
    np.random.seed(123)
    before = np.random.get_state()[1].copy()
    a = D.load_mnist1d(num_samples=200, seed=7, cache=False)
    np.testing.assert_array_equal(np.random.get_state()[1], before)
    b = D.load_mnist1d(num_samples=200, seed=7)
    assert a.x_train.shape == (160, 40) and a.x_test.shape == (40, 40)
    np.testing.assert_array_equal(a.x_train, b.x_train)
    assert a.num_classes == 10 and a.x_train.dtype == np.float32


def test_mnist1d_is_cached_on_disk_and_read_back_identically(tmp_path, monkeypatch):
    """Chapters 6-9 each need the same MNIST-1D arrays: generated once, then read from the cache."""
    import mnist1d.data

    monkeypatch.setenv("IGR_TUTORIAL_CACHE", str(tmp_path))
    fresh = D.load_mnist1d(num_samples=200, seed=7, cache=False)
    first = D.load_mnist1d(num_samples=200, seed=7)
    (path,) = (tmp_path / "mnist1d").glob("*.npz")
    assert "n200-s7" in path.name
    monkeypatch.setattr(mnist1d.data, "make_dataset", lambda args: pytest.fail("regenerated despite the cache"))
    again = D.load_mnist1d(num_samples=200, seed=7)
    for name in ("x_train", "y_train", "x_test", "y_test"):
        np.testing.assert_array_equal(getattr(again, name), getattr(fresh, name))
        np.testing.assert_array_equal(getattr(first, name), getattr(fresh, name))
        assert getattr(again, name).dtype == getattr(fresh, name).dtype
    monkeypatch.undo()
    monkeypatch.setenv("IGR_TUTORIAL_CACHE", str(tmp_path))
    path.write_bytes(b"not an npz file")  # a damaged cache entry is regenerated, not trusted
    np.testing.assert_array_equal(D.load_mnist1d(num_samples=200, seed=7).x_train, fresh.x_train)
    assert not list((tmp_path / "mnist1d").glob("*.tmp.npz"))


def test_mnist1d_rejects_bad_sizes():
    with pytest.raises(ValueError, match="num_samples"):
        D.load_mnist1d(num_samples=5)
    with pytest.raises(ValueError, match="train_split"):
        D.load_mnist1d(train_split=1.5)
