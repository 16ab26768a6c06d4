"""Result writers of the evaluation: metric values, notes and files.

Each `*_results` function takes the activations the passes collected
(`passes.py`) and fills its part of the result dict `evaluate()` returns:
'metrics' (flat name -> float), 'notes' (how each figure was computed),
'details' and, for a metric that failed here, 'errors'. `write_outputs`
writes that dict as W/eval/results_{TAG}.json (TAG: step{N}_{FP}, FP the
settings' fingerprint, `settings.py`), with the grids as PNGs and everything
as TensorBoard summaries; results_latest.json holds the newest step's.
"""

import json
import os
from typing import Any, Dict, Sequence

from absl import logging
import numpy as np
import tensorflow as tf

from bigbigan_tf import data as data_lib
from bigbigan_tf import files
from bigbigan_tf import grids
from bigbigan_tf.evaluation import digit_classifier as digit_lib
from bigbigan_tf.evaluation import features as features_lib
from bigbigan_tf.evaluation import metrics as metrics_lib
from bigbigan_tf.evaluation import prdc as prdc_lib

LATEST_RESULTS_FILE = 'results_latest.json'
# Standard IS protocol: 10 splits.
IS_SPLITS = 10
DIGIT_FID_NOTE = ('digit Frechet distance (penultimate features of a small '
                  'CNN trained on the training split), NOT comparable with '
                  'Inception FID')


def json_default(value):
  """NumPy scalars and arrays as JSON values."""
  if isinstance(value, np.generic):
    return value.item()
  if isinstance(value, np.ndarray):
    return value.tolist()
  raise TypeError(f'{type(value).__name__} is not JSON serialisable')


def generative_results(result, names: Sequence[str], real, fake, *,
                       num_samples: int, resolution: int,
                       injected: bool, shortfall: str) -> None:
  """IS / FID / KID into result['metrics'], with notes and counts."""
  values, notes = result['metrics'], result['notes']
  pool_key = 'inception/' + metrics_lib.POOL_KEY
  if 'is' in names:
    splits = min(IS_SPLITS, num_samples)
    scores = metrics_lib.inception_score_splits(
        fake['inception/' + metrics_lib.LOGITS_KEY], num_splits=splits)
    values['is'] = float(np.mean(scores))
    values['is_std'] = float(np.std(scores))
    notes['is'] = (f'mean and std over {splits} splits of {num_samples} '
                   'samples' + ('; scored by the injected classifier_fn, not '
                                'Inception' if injected else ''))
  for name, distance in (('fid', metrics_lib.frechet_distance),
                         ('kid', metrics_lib.kernel_distance)):
    if name in names:
      values[name] = distance(real['limited'][pool_key], fake[pool_key])
      notes[name] = (f'{num_samples} generated vs {real["num_limited"]} real '
                     f'images (eval split, average-pooled to {resolution}px)'
                     + shortfall)
  result['details']['generative'] = {
      'num_generated': num_samples, 'num_real': real['num_limited'],
      'eval_split_smaller': bool(shortfall)}


def digit_results(result, names: Sequence[str], real, fake, *,
                  num_samples: int, shortfall: str) -> None:
  """digit_fid / recon_accuracy and the classifier's accuracy on real x."""
  values, notes = result['metrics'], result['notes']
  limited, num_real = real['limited'], real['num_limited']
  labels = limited['labels']
  if 'digit_fid' in names:
    values['digit_fid'] = metrics_lib.frechet_distance(
        limited['digit/' + digit_lib.FEATURES_KEY],
        fake['digit/' + digit_lib.FEATURES_KEY])
    notes['digit_fid'] = (f'{DIGIT_FID_NOTE}; {num_samples} generated vs '
                          f'{num_real} real images' + shortfall)
  accuracy = float(np.mean(
      np.argmax(limited['digit/' + digit_lib.LOGITS_KEY], 1) == labels))
  values['digit_classifier_accuracy'] = accuracy
  result['details']['digit_classifier']['accuracy_on_eval'] = accuracy
  if 'recon_accuracy' in names:
    values['recon_accuracy'] = float(np.mean(
        np.argmax(limited['recon_logits'], 1) == labels))
    notes['recon_accuracy'] = (
        f'fraction of the first {num_real} eval images x whose '
        'reconstruction G(E(x).z_mean) the digit classifier labels as x\'s '
        'label; digit_classifier_accuracy is its accuracy on the real x')


def prdc_results(result, real, fake, *, space: str, k: int,
                 num_samples: int, shortfall: str) -> None:
  """prdc/precision, recall, density, coverage on FID's feature space."""
  key = (f'inception/{metrics_lib.POOL_KEY}' if space == 'inception' else
         f'digit/{digit_lib.FEATURES_KEY}')
  try:
    values = prdc_lib.prdc(real['limited'][key], fake[key], k=k)
  except ValueError as e:
    result['errors']['prdc'] = str(e)
    return
  for name, value in values.items():
    result['metrics'][f'prdc/{name}'] = value
  result['details']['prdc'] = {'k': k, 'features': key}
  result['notes']['prdc'] = (
      f'improved precision / recall and density / coverage, k = {k}, on '
      + ('Inception pool_3 features' if space == 'inception' else
         'the digit classifier\'s penultimate features (offline stand-in; '
         'NOT comparable with Inception-based figures)')
      + f'; {num_samples} generated vs {real["num_limited"]} real images'
      + shortfall)


def probe_results(result, probe: Dict[str, Any], *, config,
                  feature: str) -> None:
  """The linear probe's figures (`probe` from linear_probe.linear_probe)."""
  result['details']['linear_probe'] = probe
  for key in ('top1', 'top5', 'train_val_top1'):
    result['metrics'][f'linear_probe/{key}'] = float(probe[key])
  note = (f'logistic regression on frozen {feature} of the '
          f'{config.data.split!r} split ({probe["num_train_val"]} held out as '
          f'train_val), top-1 / top-{probe["top5_k"]} on the '
          f'{config.data.eval_split!r} split')
  if data_lib.parse_data_name(config.data.name)[0] == 'folder':
    note += '; a folder has no splits, so both are the same images'
  result['notes']['linear_probe'] = note


def grid_images(nets, real, *, cols: int, batch_size: int,
                seed: int) -> Dict[str, np.ndarray]:
  """The samples grid (G(z), fixed seed) and the eval pass's recon grid."""
  samples = np.concatenate(list(features_lib.generated_batches(
      nets, num=cols * cols, batch_size=batch_size, seed=seed)))
  return grids.sample_and_reconstruction_grids(
      samples, real['grid_real'], real['grid_recon'], cols=cols)


def write_outputs(result, grid_images: Dict[str, np.ndarray], *,
                  eval_dir: str, tag: str, step: int) -> None:
  """PNG grids, TensorBoard summaries and the JSON files."""
  tf.io.gfile.makedirs(eval_dir)
  for name, grid in grid_images.items():
    result['grids'][name] = os.path.join(eval_dir, f'{name}_{tag}.png')
    grids.write_png(result['grids'][name], grid)
  writer = tf.summary.create_file_writer(eval_dir)
  with writer.as_default():
    for name, value in result['metrics'].items():
      tf.summary.scalar(name, value, step=step,
                        description=result['notes'].get(name.split('/')[0]))
    for name, grid in grid_images.items():
      tf.summary.image(name, grid[None], step=step)
  writer.close()
  result['results_file'] = os.path.join(eval_dir, f'results_{tag}.json')
  files.write_json(result['results_file'], result, default=json_default)
  latest = os.path.join(eval_dir, LATEST_RESULTS_FILE)
  if _is_newest(latest, result.get('step')):
    files.write_json(latest, result, default=json_default)
  logging.info('Wrote %s.', result['results_file'])


def _is_newest(latest: str, step) -> bool:
  """Whether a result of `step` belongs in results_latest.json: a newer
  step's stays there (a newest-first catch-up evaluates older ones last)."""
  try:
    with tf.io.gfile.GFile(latest) as f:
      kept = json.load(f).get('step')
  except (tf.errors.NotFoundError, ValueError, AttributeError):
    return True
  return step is None or kept is None or step >= kept
