"""Data for the deep-network chapters (6–8).

* :func:`load_mnist1d` — the default: MNIST-1D (Greydanus 2020), *generated locally* by the
  ``mnist1d`` package's ``make_dataset`` (no download, never its pickle path). 40-dimensional signals,
  10 classes; small enough for a 2-core CPU, hard enough that MLPs show a generalization gap.
* :func:`load_mnist` — MNIST for GPU/Colab runs: the original IDX files are downloaded on
  first use, verified against a pinned SHA-256, cached in a user cache directory, and parsed with NumPy
  (nothing is ever unpickled). A download whose checksum does not match is discarded, never cached.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import os
import pathlib
import shutil
import tempfile
import urllib.request
from typing import Mapping, Sequence

import numpy as np

__all__ = [
    "ChecksumError",
    "Dataset",
    "cache_directory",
    "fetch_verified",
    "load_idx_dataset",
    "load_mnist",
    "load_mnist1d",
    "read_idx",
    "sha256_of",
]


class ChecksumError(ValueError):
    """A downloaded or cached file does not have the SHA-256 it must have."""


@dataclasses.dataclass(frozen=True)
class Dataset:
    """A classification data set as NumPy arrays: inputs ``x`` (float32, one row an example), labels ``y``."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray

    @property
    def num_classes(self) -> int:
        return int(max(self.y_train.max(), self.y_test.max())) + 1

    def subset(self, num_train: int | None = None, num_test: int | None = None) -> "Dataset":
        """The first ``num_train`` training and ``num_test`` test examples (all when ``None``)."""
        return Dataset(
            self.name,
            self.x_train[:num_train],
            self.y_train[:num_train],
            self.x_test[:num_test],
            self.y_test[:num_test],
        )


# --------------------------------------------------------------------------------------------------
# MNIST-1D (generated, no download)
# --------------------------------------------------------------------------------------------------


def load_mnist1d(num_samples: int = 5000, seed: int = 42, train_split: float = 0.8, *, cache: bool = True) -> Dataset:
    """MNIST-1D generated with ``mnist1d.data.make_dataset`` (Greydanus 2020); no network access.

    With the defaults this is the standard data set: 4000 training and 1000 test signals of length 40.
    NumPy's global random state, which ``make_dataset`` seeds, is restored afterwards. Generating takes
    seconds, so with ``cache=True`` the arrays are also saved to (and next time read from)
    ``cache_directory()/mnist1d``, keyed by the arguments and the mnist1d version; a file that does not
    read back is regenerated.
    """
    try:
        from mnist1d.data import get_dataset_args, make_dataset
    except ImportError as exc:  # pragma: no cover - exercised only without the optional dependency
        raise ImportError(
            "load_mnist1d needs the 'mnist1d' package: pip install mnist1d==0.0.2.post1 "
            "(it is in the book's requirements.txt)."
        ) from exc
    if num_samples < 20:
        raise ValueError(f"num_samples must be at least 20 (2 per class and split), got {num_samples}.")
    if not 0 < train_split < 1:
        raise ValueError(f"train_split must lie strictly between 0 and 1, got {train_split}.")
    names = ("x_train", "y_train", "x_test", "y_test")
    path = _mnist1d_cache_path(int(num_samples), int(seed), float(train_split)) if cache else None
    if path is not None and path.exists():
        try:
            with np.load(path) as f:
                return Dataset("mnist1d", *(np.array(f[n]) for n in names))
        except (OSError, ValueError, KeyError):
            pass  # unreadable: regenerate below
    args = get_dataset_args()
    args.num_samples, args.seed, args.train_split = int(num_samples), int(seed), float(train_split)
    state = np.random.get_state()
    try:
        data = make_dataset(args)
    finally:
        np.random.set_state(state)
    out = Dataset(
        "mnist1d",
        np.asarray(data["x"], np.float32),
        np.asarray(data["y"], np.int32),
        np.asarray(data["x_test"], np.float32),
        np.asarray(data["y_test"], np.int32),
    )
    if path is not None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npz")
            np.savez(tmp, **{n: getattr(out, n) for n in names})
            os.replace(tmp, path)
        except OSError:
            pass  # a read-only cache is no reason to fail
    return out


def _mnist1d_cache_path(num_samples: int, seed: int, train_split: float) -> pathlib.Path:
    from importlib.metadata import PackageNotFoundError, version

    try:
        v = version("mnist1d")
    except PackageNotFoundError:  # pragma: no cover
        v = "unknown"
    return cache_directory() / "mnist1d" / f"mnist1d-{v}-n{num_samples}-s{seed}-t{train_split:.6f}.npz"


# --------------------------------------------------------------------------------------------------
# MNIST (downloaded IDX files, checksummed, cached)
# --------------------------------------------------------------------------------------------------

IDX_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")

#: SHA-256 of the original gzipped IDX files.
CHECKSUMS: Mapping[str, Mapping[str, str]] = {
    "mnist": {
        "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
        "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
        "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
        "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
    },
}

#: Where the files are served (tried in order).
MIRRORS: Mapping[str, Sequence[str]] = {
    "mnist": (
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
    ),
}


def cache_directory() -> pathlib.Path:
    """``$IGR_TUTORIAL_CACHE``, else ``$XDG_CACHE_HOME/igr_tutorial``, else ``~/.cache/igr_tutorial``."""
    if os.environ.get("IGR_TUTORIAL_CACHE"):
        return pathlib.Path(os.environ["IGR_TUTORIAL_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return pathlib.Path(base) / "igr_tutorial"


def sha256_of(path: os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch_verified(
    filename: str, sha256: str, base_urls: Sequence[str], directory: os.PathLike, *, timeout: float = 60.0
) -> pathlib.Path:
    """Return ``directory/filename`` with the given SHA-256, downloading it from ``base_urls`` if needed.

    A cached file with the wrong digest is deleted and fetched again. A download goes to a temporary file
    and is moved into the cache only after its digest matches, so a corrupted or truncated download never
    poisons the cache; it raises :class:`ChecksumError` naming the file, the URL and both digests.
    """
    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / filename
    if target.exists():
        if sha256_of(target) == sha256:
            return target
        target.unlink()  # a stale or corrupted cache entry: fetch it again
    errors = []
    for base in base_urls:
        url = base.rstrip("/") + "/" + filename
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{filename}.", suffix=".part")
        try:
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
                shutil.copyfileobj(response, out)
            got = sha256_of(tmp)
            if got != sha256:
                raise ChecksumError(
                    f"{filename} downloaded from {url} has SHA-256 {got}, expected {sha256}. The file was "
                    "discarded (nothing was cached); the mirror may serve a different or truncated file. "
                    "Try again later or pass other base_urls."
                )
            os.replace(tmp, target)
            return target
        except ChecksumError:
            raise
        except OSError as exc:
            errors.append(f"{url}: {exc}")
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    raise ConnectionError(
        f"could not download {filename}; tried:\n  " + "\n  ".join(errors) + "\nCheck the network connection "
        "(the book's default data set, MNIST-1D, needs none: use load_mnist1d)."
    )


def read_idx(path: os.PathLike) -> np.ndarray:
    """Parse an IDX file (optionally gzipped) into a NumPy array: magic ``0 0 type ndim``, big-endian sizes."""
    path = pathlib.Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise ValueError(f"{path.name} is not an IDX file (bad magic number).")
    dtypes = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
    if raw[2] not in dtypes:
        raise ValueError(f"{path.name}: unknown IDX data type 0x{raw[2]:02x}.")
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(dtypes[raw[2]])
    offset = 4 + 4 * ndim
    expected = offset + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) != expected:
        raise ValueError(f"{path.name}: IDX header says {expected} bytes, the file has {len(raw)}.")
    return np.frombuffer(raw, dtype=dtype, offset=offset).reshape(shape).astype(dtype.newbyteorder("="))


def load_idx_dataset(
    name: str,
    checksums: Mapping[str, str],
    base_urls: Sequence[str],
    cache_dir: os.PathLike | None = None,
) -> Dataset:
    """Fetch (verified, cached) and parse the four IDX files of an MNIST-format data set.

    Images are scaled to ``[0, 1]`` and flattened to rows of ``height·width`` float32 values.
    """
    directory = pathlib.Path(cache_dir) if cache_dir is not None else cache_directory() / name
    arrays = {}
    for filename in IDX_FILES:
        path = fetch_verified(filename, checksums[filename], base_urls, directory)
        arrays[filename] = read_idx(path)
    xtr, ytr = arrays[IDX_FILES[0]], arrays[IDX_FILES[1]]
    xte, yte = arrays[IDX_FILES[2]], arrays[IDX_FILES[3]]
    if xtr.shape[0] != ytr.shape[0] or xte.shape[0] != yte.shape[0]:
        raise ValueError(f"{name}: images and labels disagree in count.")
    flat = lambda a: (a.reshape(a.shape[0], -1).astype(np.float32) / 255.0)  # noqa: E731
    return Dataset(name, flat(xtr), ytr.astype(np.int32), flat(xte), yte.astype(np.int32))


def load_mnist(kind: str = "mnist", cache_dir: os.PathLike | None = None) -> Dataset:
    """MNIST (``kind="mnist"``, the only kind): 60k/10k images of 28×28.

    Downloads on first use (needs a network: Colab or a GPU machine), verifies SHA-256, caches under
    :func:`cache_directory`. Used by the paper-sized configuration of chapters 6–7.
    """
    if kind not in CHECKSUMS:
        raise ValueError(f"kind must be one of {sorted(CHECKSUMS)}, got {kind!r}.")
    return load_idx_dataset(kind, CHECKSUMS[kind], MIRRORS[kind], cache_dir)
