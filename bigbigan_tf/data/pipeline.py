"""Sources -> sharded, shuffled, seeded, preprocessed batches.

`make_dataset` builds the pipeline a config's `data` section describes;
`distributed_dataset` feeds it to a `tf.distribute.Strategy`.
"""

from __future__ import annotations

from typing import Any

import tensorflow as tf

from bigbigan_tf.data.common import AUTOTUNE, DataError, Source, parse_data_name
from bigbigan_tf.data.folder import folder_source
from bigbigan_tf.data.mnist import mnist_source
from bigbigan_tf.data.preprocess import check_data_config, make_preprocess
from bigbigan_tf.data.tfds_source import tfds_source


def make_dataset(data_config: Any,
                 *,
                 image_size: int,
                 batch_size: int,
                 training: bool,
                 split: str | None = None,
                 seed: int = 0,
                 input_context: tf.distribute.InputContext | None = None
                ) -> tf.data.Dataset:
  """Builds the input pipeline a config's `data` section describes.

  Args:
    data_config: the `config.data` ConfigDict (fields name, data_dir, split,
      eval_split, download, augmentation, crop_min_area, random_flip,
      shuffle_buffer; see configs/base.py).
    image_size: side S of the square output images.
    batch_size: examples per batch (per replica when fed by
      `distributed_dataset`).
    training: True: shard, shuffle, repeat forever, augment, drop the last
      partial batch. False: one ordered pass, central square crop, keep the
      last partial batch.
    split: the split to read; defaults to `data_config.split` when training
      and `data_config.eval_split` otherwise. Ignored for folders.
    seed: seed of shuffling and augmentation; the same seed gives the same
      stream of batches.
    input_context: from `distribute_datasets_from_function`; this pipeline
      then reads only its shard of the data.

  Returns:
    A dataset of {'image': float32 [B, S, S, 3] in [-1, 1], 'label': int32
    [B]} (label -1 where the data has no labels). B is static (= batch_size)
    when training; in eval the last batch may be smaller.

  Raises:
    DataError: the data cannot be read as configured (see the message).
  """
  check_data_config(data_config)
  if image_size < 1 or batch_size < 1:
    raise DataError(f'image_size={image_size} and batch_size={batch_size} '
                    'must both be >= 1.')
  if split is None:
    split = data_config.split if training else data_config.eval_split
  kind, arg = parse_data_name(data_config.name)
  augment = training and data_config.augmentation == 'resnet'
  if kind == 'mnist':
    source = mnist_source(split)
  elif kind == 'tfds':
    source = tfds_source(arg, data_config, split=split, training=training,
                          seed=seed, input_context=input_context)
  else:
    source = folder_source(
        arg, training=training, seed=seed, input_context=input_context,
        # Eval keeps only a central square of side >= S, so JPEGs may be
        # decoded at a reduced scale; random crops need the full resolution.
        min_decode_size=0 if augment else image_size)
  ds = _examples(
      source,
      preprocess=make_preprocess(data_config, image_size=image_size,
                                  augment=augment),
      shuffle_buffer=data_config.shuffle_buffer,
      training=training,
      seed=seed,
      input_context=input_context)
  ds = ds.batch(batch_size, drop_remainder=training,
                num_parallel_calls=AUTOTUNE)
  return ds.prefetch(AUTOTUNE)


def distributed_dataset(strategy: tf.distribute.Strategy,
                        data_config: Any,
                        *,
                        image_size: int,
                        global_batch_size: int,
                        seed: int = 0) -> tf.distribute.DistributedDataset:
  """The training pipeline, one shard per input pipeline of `strategy`.

  Args:
    strategy: the run's strategy.
    data_config: the `config.data` ConfigDict.
    image_size: side S of the images.
    global_batch_size: batch size summed over all replicas; must be divisible
      by `strategy.num_replicas_in_sync`.
    seed: seed of shuffling and augmentation.

  Returns:
    A distributed dataset whose per-replica values are batches of
    global_batch_size / num_replicas examples, as in `make_dataset`.

  Raises:
    DataError: the global batch does not split evenly among the replicas, or
      the data cannot be read.
  """
  replicas = strategy.num_replicas_in_sync
  if global_batch_size % replicas:
    raise DataError(
        f'The global batch size {global_batch_size} does not split evenly '
        f'among {replicas} replicas; use a multiple of {replicas}.')

  def dataset_fn(input_context: tf.distribute.InputContext) -> tf.data.Dataset:
    return make_dataset(
        data_config,
        image_size=image_size,
        batch_size=input_context.get_per_replica_batch_size(global_batch_size),
        training=True,
        seed=seed,
        input_context=input_context)

  return strategy.distribute_datasets_from_function(dataset_fn)


def _examples(source: Source, *, preprocess, shuffle_buffer: int,
              training: bool, seed: int,
              input_context: tf.distribute.InputContext | None
             ) -> tf.data.Dataset:
  """Shards, shuffles, repeats, decodes and preprocesses a source."""
  ds = source.dataset
  if not source.sharded:
    ds = _shard(ds, input_context)
  if training:
    # Shuffling undecoded elements keeps the buffer small (paths, encoded
    # bytes), so a large buffer costs little memory.
    ds = ds.shuffle(shuffle_buffer, seed=seed,
                    reshuffle_each_iteration=True).repeat()
  ds = _with_element_seeds(ds, seed, input_context)

  def example(element_seed, raw_and_label):
    raw, label = raw_and_label
    valid, image = source.decode(raw)
    return valid, {'image': preprocess(image, element_seed),
                   'label': tf.cast(label, tf.int32)}

  ds = ds.map(example, num_parallel_calls=AUTOTUNE)
  if source.may_fail:
    ds = ds.filter(lambda valid, _: valid)
  return ds.map(lambda _, features: features)


def _with_element_seeds(ds: tf.data.Dataset, seed: int,
                        input_context: tf.distribute.InputContext | None
                       ) -> tf.data.Dataset:
  """Pairs each element with its own stateless seed, int64 [2].

  Numbered after `repeat`, so each epoch crops differently; the pipeline id is
  folded in so that input pipelines do not repeat one another's crops.
  """
  pipelines = input_context.num_input_pipelines if input_context else 1
  pipeline_id = input_context.input_pipeline_id if input_context else 0
  return ds.enumerate().map(
      lambda i, element: (tf.stack([tf.constant(seed, tf.int64),
                                    i * pipelines + pipeline_id]), element))


def _shard(ds: tf.data.Dataset,
           input_context: tf.distribute.InputContext | None) -> tf.data.Dataset:
  if input_context and input_context.num_input_pipelines > 1:
    ds = ds.shard(input_context.num_input_pipelines,
                  input_context.input_pipeline_id)
  return ds
