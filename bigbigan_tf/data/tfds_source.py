"""The 'tfds:NAME' source: any TensorFlow Datasets image dataset.

Read with the builder API; never waits on a download unless `data.download`
is set, and says how to prepare a dataset that is not there.
"""

from __future__ import annotations

import difflib
import os
from typing import Any

from absl import logging
import numpy as np
import tensorflow as tf

from bigbigan_tf.data.common import AUTOTUNE, DataError, Source


def tfds_source(name: str, data_config: Any, *, split: str, training: bool,
                 seed: int, input_context: tf.distribute.InputContext | None
                ) -> Source:
  """Examples of the TFDS dataset `name`; see `make_dataset`."""
  # Imported here: TFDS is heavy and only this source needs it.
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  builder = _tfds_builder(name, data_config)
  image_key, label_key = _tfds_feature_keys(builder, name)
  available = list(builder.info.splits)
  # A split spec may slice and join splits: 'train[:90%]+validation'. An
  # unprepared (or mocked) dataset knows no splits yet; TFDS checks it then.
  for part in split.split('+'):
    base = part.split('[')[0].strip()
    if available and base not in available:
      raise DataError(
          f'TFDS dataset {name!r} has no split {base!r} (asked for '
          f'split={split!r}); available splits: '
          f'{", ".join(sorted(available))}. Set --config.data.split / '
          '--config.data.eval_split.')

  def read(context):
    return builder.as_dataset(
        split=split,
        shuffle_files=training,
        # Images stay encoded through the shuffle buffer; decoded in `decode`.
        decoders={image_key: tfds.decode.SkipDecoding()},
        read_config=tfds.ReadConfig(shuffle_seed=seed, input_context=context))

  sharded = bool(input_context and input_context.num_input_pipelines > 1)
  try:
    try:
      # Each input pipeline then reads only its share of the files.
      ds = read(input_context if sharded else None)
    except ValueError:
      if not sharded:
        raise
      # Fewer files than input pipelines: read all, keep every n-th example.
      logging.info('TFDS %s/%s has too few files to shard by file over %d '
                   'input pipelines; sharding by example.', name, split,
                   input_context.num_input_pipelines)
      ds, sharded = read(None), False
  except AssertionError as e:
    # TFDS's way of saying the data is not under data_dir (checked before any
    # read, so this fails at once rather than waiting on anything).
    raise DataError(_not_prepared_message(builder, name)) from e
  except ValueError as e:
    raise DataError(f'Cannot read split {split!r} of TFDS dataset {name!r}: '
                    f'{e}') from e

  image_feature = builder.info.features[image_key]

  def select(example):
    label = (example[label_key] if label_key is not None
             else tf.constant(-1, tf.int64))
    return example[image_key], label

  def decode(encoded):
    return tf.constant(True), image_feature.decode_example(encoded)

  ds = ds.map(select, num_parallel_calls=AUTOTUNE)
  return Source(ds, decode, sharded=sharded)


def _tfds_builder(name: str, data_config: Any) -> Any:
  """The prepared builder of `name`, downloading only if allowed."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  try:
    builder = tfds.builder(name, data_dir=data_config.data_dir)
  except tfds.core.registered.DatasetNotFoundError as e:
    base = name.split(':')[0].split('/')[0]
    # Community datasets would be listed from GCS: slow, and offline here.
    known = tfds.list_builders(with_community_datasets=False)
    close = difflib.get_close_matches(base, known, n=5)
    hint = f' Did you mean {", ".join(close)}?' if close else ''
    raise DataError(
        f'Unknown TFDS dataset {name!r} (data.name=tfds:{name}).{hint} See '
        'https://www.tensorflow.org/datasets/catalog for the names.') from e
  if data_config.download and not builder.is_prepared():
    logging.info('Downloading and preparing TFDS %s into %s.', name,
                 builder.data_dir_root)
    try:
      builder.download_and_prepare()
    except Exception as e:  # Any failure here is the user's to fix.
      raise DataError(
          f'Downloading and preparing TFDS dataset {name!r} into '
          f'{builder.data_dir_root} failed: {type(e).__name__}: {e}\n'
          f'{_manual_instructions(builder, name)}') from e
  return builder


def _not_prepared_message(builder: Any, name: str) -> str:
  data_dir = builder.data_dir_root
  return (
      f'TFDS dataset {name!r} is not prepared under data_dir={data_dir} and '
      'data.download is False, so nothing was downloaded. Prepare it once with '
      f'`tfds build {name} --data_dir={data_dir}` (needs network), or rerun '
      'with --config.data.download=True, or point --config.data.data_dir at '
      f'the folder that holds it. {_manual_instructions(builder, name)}'
  ).strip()


def _manual_instructions(builder: Any, name: str) -> str:
  instructions = getattr(builder, 'MANUAL_DOWNLOAD_INSTRUCTIONS', None)
  if not instructions:
    return ''
  manual_dir = os.path.join(builder.data_dir_root, 'downloads', 'manual')
  return (f'{name} cannot be downloaded automatically: put its files in '
          f'{manual_dir} first. TFDS says: '
          + ' '.join(instructions.split()))


def _tfds_feature_keys(builder: Any, name: str) -> tuple[str, str | None]:
  """(image key, label key or None) among a dataset's top-level features."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  features = builder.info.features
  if not isinstance(features, tfds.features.FeaturesDict):
    raise DataError(f'TFDS dataset {name!r} has features {features!r}, not a '
                    'dict with an image; use an image dataset.')
  images = [k for k, f in features.items()
            if isinstance(f, tfds.features.Image)]
  if not images:
    raise DataError(f'TFDS dataset {name!r} has no image feature (features: '
                    f'{", ".join(features.keys())}); use an image dataset.')
  image_key = 'image' if 'image' in images else images[0]
  if 'label' in features and _is_integer_scalar(features['label']):
    return image_key, 'label'
  labels = [k for k, f in features.items()
            if isinstance(f, tfds.features.ClassLabel)]
  return image_key, labels[0] if labels else None


def _is_integer_scalar(feature: Any) -> bool:
  dtype = getattr(feature, 'np_dtype', None)
  return (getattr(feature, 'shape', None) == () and dtype is not None
          and np.issubdtype(dtype, np.integer))
