"""The passes of the evaluation over the data and over G's samples.

`train_pass` reads the training split once (probe features, images for the
digit classifier), `eval_pass` the eval split once (every consumer of real
images at the same time: Inception, the digit classifier, the probe, the
reconstruction grid), and `generated_activations` runs G's samples once
through every classifier that needs them. Each returns arrays concatenated
over batches, for the result writers in `results.py`.
"""

from typing import Any, Dict, Mapping, Optional

import numpy as np

from bigbigan_tf import data as data_lib
from bigbigan_tf.evaluation import digit_classifier as digit_lib
from bigbigan_tf.evaluation import features as features_lib
from bigbigan_tf.evaluation import metrics as metrics_lib

ClassifierFn = metrics_lib.ClassifierFn


class Collector:
  """Concatenates arrays of the same keys over batches."""

  def __init__(self):
    self._chunks: Dict[str, list] = {}

  def add(self, **arrays):
    for key, value in arrays.items():
      self._chunks.setdefault(key, []).append(np.asarray(value))

  def __contains__(self, key):
    return key in self._chunks

  def __getitem__(self, key) -> np.ndarray:
    return np.concatenate(self._chunks[key])


def prefixed(outputs: Mapping[str, Any], prefix: str) -> Dict[str, np.ndarray]:
  """A classifier's outputs as arrays, keys prefixed ('inception/logits')."""
  return {prefix + key: np.asarray(value) for key, value in outputs.items()}


def train_pass(config, nets, *, batch_size: int, feature: Optional[str],
               keep_small_images: bool) -> Collector:
  """Training split: E features and labels; G-resolution images if asked."""
  out = Collector()
  for batch in features_lib.real_batches(
      config, split=config.data.split, image_size=nets.encoder_resolution,
      batch_size=batch_size):
    x, labels = batch['image'].numpy(), batch['label'].numpy()
    out.add(labels=labels)
    if feature:
      out.add(features=nets.encode(x)[feature])
    if keep_small_images:
      out.add(small=features_lib.downsample(x, nets.resolution))
  if 'labels' not in out:
    raise data_lib.DataError(
        f'The training split {config.data.split!r} of data.name='
        f'{config.data.name!r} is empty.')
  return out


def eval_pass(config, nets, *, batch_size: int, limit: int,
              feature: Optional[str], inception_fn: Optional[ClassifierFn],
              digit: Optional[digit_lib.DigitClassifier], recon: bool,
              grid_n: int) -> Dict[str, Any]:
  """One ordered pass over the eval split, feeding every consumer.

  The first `limit` images feed Inception (FID / KID), the digit classifier
  (digit_fid, its accuracy, reconstructions); all images feed the probe
  (when `feature` is set); the first `grid_n` the reconstruction grid. The
  pass stops early when only limited consumers remain.
  """
  limited, probe = Collector(), Collector()
  grid_real, grid_recon = [], []
  seen, exhausted = 0, True
  needs_limited = inception_fn is not None or digit is not None
  if not (needs_limited or feature or grid_n):  # E.g. IS alone.
    return {'limited': limited, 'probe': probe, 'num_limited': 0,
            'split_size': None, 'grid_real': None, 'grid_recon': None}
  for batch in features_lib.real_batches(
      config, split=config.data.eval_split,
      image_size=nets.encoder_resolution, batch_size=batch_size):
    x, labels = batch['image'].numpy(), batch['label'].numpy()
    n_lim = max(0, min(len(x), limit - seen)) if needs_limited else 0
    n_grid = max(0, min(len(x), grid_n - seen))
    enc = None
    if feature or (recon and n_lim) or n_grid:
      enc = nets.encode(x)
    if feature:
      probe.add(features=enc[feature], labels=labels)
    if n_lim or n_grid:
      small = features_lib.downsample(x[:max(n_lim, n_grid)], nets.resolution)
    if n_lim:
      limited.add(labels=labels[:n_lim])
      if inception_fn is not None:
        limited.add(**prefixed(inception_fn(small[:n_lim]), 'inception/'))
      if digit is not None:
        limited.add(**prefixed(digit(small[:n_lim]), 'digit/'))
    recon_images = None
    if (recon and n_lim) or n_grid:
      recon_images = nets.generate(enc['z_mean'][:max(n_lim if recon else 0,
                                                      n_grid)])
    if recon and n_lim:
      limited.add(recon_logits=digit(recon_images[:n_lim])['logits'])
    if n_grid:
      grid_real.append(small[:n_grid])
      grid_recon.append(recon_images[:n_grid])
    seen += len(x)
    if not feature and seen >= max(limit if needs_limited else 0, grid_n):
      exhausted = False
      break
  if not seen:
    raise data_lib.DataError(
        f'The eval split {config.data.eval_split!r} of data.name='
        f'{config.data.name!r} is empty; set --config.data.eval_split.')
  return {
      'limited': limited, 'probe': probe,
      'num_limited': min(seen, limit) if needs_limited else 0,
      # The split's size, when the pass read all of it.
      'split_size': seen if exhausted else None,
      'grid_real': np.concatenate(grid_real) if grid_real else None,
      'grid_recon': np.concatenate(grid_recon) if grid_recon else None,
  }


def generated_activations(nets, classifiers: Dict[str, Any], *,
                          num_samples: int, batch_size: int,
                          seed: int) -> Dict[str, np.ndarray]:
  """One pass of G through every classifier that needs generated images."""
  if not classifiers:
    return {}

  def classify(images):
    outputs = {}
    for prefix, fn in classifiers.items():
      outputs.update(prefixed(fn(images), prefix))
    return outputs

  return metrics_lib.compute_activations(
      features_lib.generated_batches(nets, num=num_samples,
                                     batch_size=batch_size, seed=seed),
      classify, num_examples=num_samples)
