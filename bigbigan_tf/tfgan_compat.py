"""Imports TF-GAN on TensorFlow >= 2.16, where `tf.estimator` no longer exists.

TF-GAN 2.1.0 (the last release) subclasses Estimator classes at import time:
`tensorflow_gan/python/train.py` defines `class RunTrainOpsHook(
tf.estimator.SessionRunHook)`, and its `estimator/` package subclasses
`tf.estimator.Estimator` and `tf.compat.v1.estimator.tpu.TPUEstimator`.
TensorFlow 2.16 removed `tf.estimator`, so `import tensorflow_gan` raises
`AttributeError: module 'tensorflow' has no attribute 'estimator'` before any
of its metrics can be used (upstream issues tensorflow/gan #55 and #59, open).

bigbigan-tf only needs TF-GAN's pure metric functions (classifier score,
Frechet and kernel distances from activations), which never touch Estimator.
`import_tfgan()` therefore installs a stub `tf.estimator` /
`tf.compat.v1.estimator` namespace holding just the names TF-GAN touches at
import time, only when TensorFlow lacks them, and then imports TF-GAN. The stub
classes refuse to be instantiated, so code that really needs Estimator fails
with a message instead of misbehaving.
"""

import importlib
import types
from typing import Any

import tensorflow as tf

# Marks namespaces created here, so a second call recognises its own stub.
_STUB_MARKER = '_bigbigan_tfgan_stub'

# How to install what a missing module belongs to (requirements.txt pins).
_FIXES = {
    'pkg_resources': "pip install 'setuptools<81' (tensorflow_hub 0.16.1 "
                     'imports pkg_resources, which setuptools 81 and later '
                     'no longer ship)',
    'tensorflow_probability': 'pip install tensorflow-probability==0.25.0',
    'tensorflow_gan': 'pip install tensorflow-gan==2.1.0',
    'tensorflow_hub': 'pip install tensorflow-hub==0.16.1',
    'tf_keras': 'pip install tf-keras==2.21.0',
}


class MissingDependencyError(ImportError):
  """A module TF-GAN or TF Hub needs is not installed; says how to fix it."""


def import_dependency(name: str) -> types.ModuleType:
  """`importlib.import_module(name)`, with a one-line fix if something's missing.

  Raises:
    MissingDependencyError: `name`, or a module it imports (e.g.
      `pkg_resources` under tensorflow_hub), is not installed. The message
      names the missing module and the pip command that installs it.
  """
  try:
    return importlib.import_module(name)
  except ModuleNotFoundError as e:
    missing = e.name or name
    fix = _FIXES.get(missing.split('.')[0],
                     'pip install -r requirements.txt')
    # `from None`: the message is the whole story; no chained traceback.
    raise MissingDependencyError(
        f'cannot import {name}: module {missing!r} is not installed. Fix: '
        f'{fix}.', name=missing) from None

_REMOVED_MESSAGE = (
    'tf.estimator was removed in TensorFlow 2.16; {name} here is a stub that '
    'bigbigan_tf.tfgan_compat installed only so that tensorflow_gan can be '
    'imported. TF-GAN\'s Estimator-based APIs (GANEstimator, TPUGANEstimator, '
    'RunTrainOpsHook, ...) are unavailable; use its metric functions only.')


class _RemovedEstimatorClass:
  """Base of the stub classes: subclassing works, instantiating fails."""

  def __init__(self, *args: Any, **kwargs: Any):
    del args, kwargs  # Unused: the stub cannot be built.
    raise NotImplementedError(
        _REMOVED_MESSAGE.format(name=type(self).__name__))


class SessionRunHook(_RemovedEstimatorClass):
  """Stub of `tf.estimator.SessionRunHook` (base of TF-GAN's training hooks)."""


class Estimator(_RemovedEstimatorClass):
  """Stub of `tf.estimator.Estimator` (base of TF-GAN's GANEstimator)."""


class TPUEstimator(Estimator):
  """Stub of `tf.compat.v1.estimator.tpu.TPUEstimator` (TPUGANEstimator)."""


def _make_estimator_stub() -> types.ModuleType:
  """Returns a namespace with the Estimator names TF-GAN uses at import time."""
  stub = types.ModuleType(
      'tensorflow.estimator',
      doc='Stub installed by bigbigan_tf.tfgan_compat; see that module.')
  stub.SessionRunHook = SessionRunHook
  stub.Estimator = Estimator
  stub.tpu = types.ModuleType('tensorflow.estimator.tpu')
  stub.tpu.TPUEstimator = TPUEstimator
  setattr(stub, _STUB_MARKER, True)
  return stub


def _has_estimator(namespace: Any) -> bool:
  try:
    return getattr(namespace, 'estimator', None) is not None
  except ImportError:
    # TF < 2.16 loads tf.estimator lazily; a broken tensorflow_estimator
    # install surfaces here, and a stub is then the only way in.
    return False


def import_tfgan() -> types.ModuleType:
  """Returns the `tensorflow_gan` module, importable on TF >= 2.16.

  Imports `tensorflow_probability` first (TF-GAN needs it, and importing it
  before the stub exists keeps the fake namespace invisible to TFP and to
  tf-keras, which TFP loads), then gives `tf.estimator` and
  `tf.compat.v1.estimator` a stub namespace (`SessionRunHook`, `Estimator`,
  `tpu.TPUEstimator`) where they are missing, then imports `tensorflow_gan`.
  On TensorFlow versions that still have `tf.estimator` nothing is patched.

  Idempotent: later calls return the already imported module and install
  nothing new.

  Returns:
    The `tensorflow_gan` module.

  Raises:
    MissingDependencyError: tensorflow_probability, tensorflow_gan or a
      module they import (tensorflow_hub, its pkg_resources) is missing; the
      message gives the pip command.
  """
  import_dependency('tensorflow_probability')
  # `import tensorflow.compat.v1` rebinds `tf.compat.v1` to a different
  # wrapper object; TF-GAN's own modules do that import, which would drop a
  # stub set on the earlier object. Importing it first makes `tf.compat.v1`
  # the object that TF-GAN will see.
  tf_v1 = importlib.import_module('tensorflow.compat.v1')
  stub = None
  for namespace in (tf, tf.compat.v1, tf_v1):
    if not _has_estimator(namespace):
      stub = stub or _make_estimator_stub()
      namespace.estimator = stub
  return import_dependency('tensorflow_gan')


def estimator_is_stub() -> bool:
  """Returns True if `tf.estimator` is the stub installed by `import_tfgan`."""
  return bool(getattr(getattr(tf, 'estimator', None), _STUB_MARKER, False))
