"""BigGAN's standing statistics for the batch norms of G and E.

The moving statistics of the EMA networks are copied from the live networks
at checkpoint time and do not fit the averaged weights. Standing statistics
replace them: the moving mean and variance of every batch norm become the
plain average, over a number of batches, of the batch statistics seen in a
training-mode pass (G on z ~ N(0, I); E on real training images, central
crops as at inference, no augmentation). Export and evaluation both call
`standing_statistics`, with the same batches and seed, so an exported module
and an evaluation of the same checkpoint agree.
"""

from typing import Any, Callable, Iterable

import keras
import ml_collections
import numpy as np
import tensorflow as tf

from bigbigan_tf import config_lib
from bigbigan_tf import data as data_lib
from bigbigan_tf import defaults


def batch_norm_layers(model: keras.Model) -> list[
    keras.layers.BatchNormalization]:
  """Every keras BatchNormalization layer inside `model` (any order)."""
  # Keras 3's own recursive walk over sublayers (lists included).
  # pylint: disable-next=protected-access
  layers = model._flatten_layers(include_self=False, recursive=True)
  return [layer for layer in layers
          if isinstance(layer, keras.layers.BatchNormalization)]


def apply_standing_statistics(model: keras.Model, batches: Iterable[Any],
                              call: Callable[[Any], Any]) -> int:
  """Sets every batch norm's moving statistics to its average batch statistics.

  BigGAN's "standing statistics": `call(batch)` must run `model` in training
  mode. For each batch, each batch-norm layer's batch mean and (biased)
  variance are recorded, and their plain average over all batches becomes
  the layer's moving mean and variance. Other state a training-mode pass
  updates (spectral-norm power-iteration vectors, RNG states) is restored.

  Args:
    model: a built Keras model containing BatchNormalization layers.
    batches: the inputs, one element per pass (any structure `call` takes).
    call: fn(batch) that calls `model(..., training=True)`; it is wrapped in
      a tf.function here.

  Returns:
    The number of batches averaged (0 if the model has no batch norm).

  Raises:
    ValueError: `batches` was empty. On any error the model is left unchanged.
  """
  bns = batch_norm_layers(model)
  if not bns:
    return 0
  saved = [(v, v.numpy()) for v in model.non_trainable_variables]
  momenta = [(bn.momentum, bn.trainable) for bn in bns]
  sums = [[np.zeros(bn.moving_mean.shape, np.float64),
           np.zeros(bn.moving_variance.shape, np.float64)] for bn in bns]
  count = 0
  try:
    for bn in bns:
      # Momentum 0: after a training-mode pass the moving statistics are that
      # batch's statistics. (BN updates them only when trainable.)
      bn.momentum, bn.trainable = 0.0, True
      bn.moving_mean.assign(tf.zeros_like(bn.moving_mean))
      bn.moving_variance.assign(tf.ones_like(bn.moving_variance))
    step = tf.function(call, autograph=False)
    for batch in batches:
      step(batch)
      for acc, bn in zip(sums, bns):
        acc[0] += bn.moving_mean.numpy()
        acc[1] += bn.moving_variance.numpy()
      count += 1
    if not count:
      raise ValueError('Standing statistics need at least one batch; got none.')
  except BaseException:
    for v, value in saved:
      v.assign(value)
    raise
  finally:
    for bn, (momentum, trainable) in zip(bns, momenta):
      bn.momentum, bn.trainable = momentum, trainable
  stats = {id(bn.moving_mean) for bn in bns} | {
      id(bn.moving_variance) for bn in bns}
  for v, value in saved:
    if id(v) not in stats:
      v.assign(value)
  for (mean, var), bn in zip(sums, bns):
    bn.moving_mean.assign((mean / count).astype(np.float32))
    bn.moving_variance.assign((var / count).astype(np.float32))
  return count


def generator_standing_statistics(generator: keras.Model, *, z_dim: int,
                                  num_batches: int, batch_size: int,
                                  seed: int = 0) -> int:
  """Standing statistics of G over `num_batches` batches of z ~ N(0, I)."""
  rng = np.random.default_rng(seed)
  batches = (rng.standard_normal((batch_size, z_dim)).astype(np.float32)
             for _ in range(num_batches))
  return apply_standing_statistics(
      generator, batches, lambda z: generator(z, training=True))


def encoder_standing_statistics(encoder: keras.Model,
                                config: ml_collections.ConfigDict, *,
                                num_batches: int, batch_size: int,
                                seed: int = 0) -> int:
  """Standing statistics of E over real images of the training split.

  Images are preprocessed as at inference (central square, no augmentation).
  They come from the training pipeline (repeated, so a small dataset still
  fills every batch; a folder's files permuted by `seed`, so a few batches of
  a folder sorted by class still cover every class) with a shuffle buffer of
  1: tf.data's shuffle also depends on TF's global seed, and the statistics
  should depend on `seed` only.
  """
  data_config = ml_collections.ConfigDict(config_lib.to_dict(config.data))
  data_config.augmentation = 'none'
  data_config.shuffle_buffer = 1
  try:
    dataset = data_lib.make_dataset(
        data_config, image_size=config.model.encoder_resolution,
        batch_size=batch_size, training=True, split=config.data.split,
        seed=seed)
  except data_lib.DataError as e:
    raise data_lib.DataError(
        f'Standing statistics of the encoder read the training data, which '
        f'failed: {e} Make the data readable here, or export with '
        '--standing_stats_batches=0 (standing_stats_batches=0) to keep the '
        "checkpoint's batch-norm statistics.") from e
  images = (batch['image'] for batch in dataset.take(num_batches))
  noise = tf.zeros([batch_size, encoder.z_dim])  # E's BNs precede noise.
  return apply_standing_statistics(
      encoder, images, lambda x: encoder(x, training=True, noise=noise))


def standing_statistics(config: ml_collections.ConfigDict,
                        generator: keras.Model, encoder: keras.Model, *,
                        num_batches: int = defaults.STANDING_STATS_BATCHES,
                        batch_size: int = defaults.STANDING_STATS_BATCH_SIZE
                        ) -> dict[str, Any]:
  """Sets G's and E's batch-norm statistics as export does; returns a record.

  With `num_batches` 0 nothing changes (the checkpoint's moving statistics
  stay). Same batches and seed (config.seed) wherever it is called, so an
  export and an evaluation of the same checkpoint agree.
  """
  if num_batches < 0 or batch_size < 1:
    raise ValueError(
        f'standing_stats_batches={num_batches} must be >= 0 and '
        f'standing_stats_batch_size={batch_size} >= 1.')
  if not num_batches:
    return {'method': 'checkpoint moving averages', 'batches': 0,
            'batch_size': 0}
  generator_standing_statistics(
      generator, z_dim=generator.z_dim, num_batches=num_batches,
      batch_size=batch_size, seed=config.seed)
  encoder_standing_statistics(encoder, config, num_batches=num_batches,
                              batch_size=batch_size, seed=config.seed)
  return {
      'method': ('standing statistics: plain average of training-mode '
                 'batch means and biased variances (BigGAN)'),
      'batches': num_batches,
      'batch_size': batch_size,
      'generator_inputs': 'z ~ N(0, I)',
      'encoder_inputs': (f'data.split={config.data.split!r} of '
                         f'data.name={config.data.name!r}, central crops, '
                         'source order (see encoder_standing_statistics)'),
  }
