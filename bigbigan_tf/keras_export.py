"""Native Keras 3 copies of an export's networks: EXPORT/keras/*.keras.

`export_lib.save_module` calls `write_keras_models` so that every export
holds, besides the SavedModel, `keras/encoder.keras`, `keras/generator.keras`
and `keras/discriminator.keras` (`KERAS_FILES`). They hold the weights the
SavedModel serves (EMA G and E by default, with their standing statistics;
D's live weights), in networks built on the plain Keras path (no
TensorFlow-only speed tricks of fast_ops.py), so they load and fine-tune on
the TensorFlow, JAX and PyTorch backends with any Keras optimizer (see
docs/finetuning.md).
"""

import os
import tempfile

import keras
import tensorflow as tf

from bigbigan_tf import models

KERAS_DIR = 'keras'
KERAS_FILES = {name: f'{KERAS_DIR}/{name}.keras'
               for name in ('encoder', 'generator', 'discriminator')}


def plain_copy(model: keras.Model) -> keras.Model:
  """The same network and weights, built on the plain Keras path.

  Args:
    model: a built Generator, Encoder (or RevNetEncoder) or Discriminator,
      whatever its `fast_ops`.

  Returns:
    A new model of the same class and architecture with `FastOps.plain()`,
    built and holding copies of `model`'s variables (trainable and not, e.g.
    batch-norm moving statistics and spectral-norm vectors).
  """
  config = dict(model._saved_args)  # pylint: disable=protected-access
  copy = type(model)(name=model.name, **config,
                     fast_ops=models.FastOps.plain())
  copy.build_from_config(model._build_config())  # pylint: disable=protected-access
  source = {v.path: v for v in model.weights}
  target = {v.path: v for v in copy.weights}
  if set(source) != set(target):
    raise ValueError(
        f'{model.name}: the plain copy has other variables than the model '
        f'(only in the model: {sorted(set(source) - set(target))[:5]}, only '
        f'in the copy: {sorted(set(target) - set(source))[:5]}).')
  for path, v in target.items():
    v.assign(keras.ops.convert_to_numpy(source[path]))
  return copy


def write_keras_models(networks: dict[str, keras.Model],
                       export_dir: str) -> dict[str, str]:
  """Writes plain copies of the networks to `export_dir`/keras/NAME.keras.

  Args:
    networks: {'encoder': E, 'generator': G, 'discriminator': D}, the
      float32 networks the SavedModel serves.
    export_dir: the export (or its temporary directory); local or gs://.

  Returns:
    KERAS_FILES: each network's file, relative to `export_dir`.
  """
  tf.io.gfile.makedirs(os.path.join(export_dir, KERAS_DIR))
  with tempfile.TemporaryDirectory() as tmp:
    for name, relative in KERAS_FILES.items():
      local = os.path.join(tmp, f'{name}.keras')
      plain_copy(networks[name]).save(local)
      # Through gfile so gs:// works (Keras writes local zip files).
      tf.io.gfile.copy(local, os.path.join(export_dir, relative),
                       overwrite=True)
  return dict(KERAS_FILES)


def layout_info() -> dict[str, object]:
  """What export_info.json says about the .keras files."""
  return {
      'files': dict(KERAS_FILES),
      'load': "import bigbigan_tf.models; keras.saving.load_model(path) "
              "(or bigbigan_tf.models.load(path))",
      'weights': 'as the SavedModel: EMA G and E if use_ema, standing '
                 'statistics, live D; plain Keras path (any backend)',
  }
