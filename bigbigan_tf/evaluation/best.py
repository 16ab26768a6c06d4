"""The best checkpoint of a run, kept in W/best/ out of the manager's reach.

The rule: a step's selection metric (direction known per metric) replaces the
kept copy only when it is strictly better. The copy goes to a temporary
directory first and is renamed into place, so a reader never sees half a
checkpoint; best.json beside it says step, metric, value and that step's other
metrics. All I/O goes through tf.io.gfile so gs:// works.
"""

import errno
import json
import os
import re
from typing import Any, Dict, Optional

from absl import logging
import tensorflow as tf

BEST_DIR = 'best'
BEST_JSON = 'best.json'

# True: higher is better. Keys are the metric names evaluate_lib writes.
DIRECTIONS = {
    'fid': False, 'kid': False, 'digit_fid': False,
    'is': True, 'recon_accuracy': True, 'linear_probe/top1': True,
    'linear_probe/top5': True,
}
ALIASES = {'linear_probe': 'linear_probe/top1', 'probe': 'linear_probe/top1'}


class SelectError(ValueError):
  """The selection metric is unknown."""


def selection_key(metric: str) -> str:
  """The results key of `metric` (e.g. linear_probe -> linear_probe/top1)."""
  key = ALIASES.get(metric, metric)
  if key not in DIRECTIONS:
    raise SelectError(
        f'Cannot select the best checkpoint by {metric!r}; choose one of '
        f'{", ".join(sorted(set(DIRECTIONS) | set(ALIASES)))}.')
  return key


def is_better(metric: str, value: float, than: Optional[float]) -> bool:
  """Whether `value` of `metric` strictly beats `than` (None: nothing kept)."""
  if than is None:
    return True
  higher = DIRECTIONS[selection_key(metric)]
  return value > than if higher else value < than


def read_best(workdir: str) -> Optional[Dict[str, Any]]:
  """W/best/best.json as a dict, or None if no best checkpoint is kept."""
  path = os.path.join(workdir, BEST_DIR, BEST_JSON)
  if not tf.io.gfile.exists(path):
    return None
  with tf.io.gfile.GFile(path) as f:
    return json.load(f)


def best_checkpoint(workdir: str) -> str:
  """The prefix of the kept best checkpoint (for --checkpoint=best).

  Raises:
    FileNotFoundError: W/best does not exist yet.
  """
  info = read_best(workdir)
  if info is None:
    raise FileNotFoundError(
        f'No best checkpoint in {os.path.join(workdir, BEST_DIR)} yet; run '
        f'python eval/evaluate.py --workdir={workdir} --watch (or set '
        'config.eval.every_steps) to keep one, or pass a checkpoint path.')
  return os.path.join(workdir, BEST_DIR, info['prefix'])


def _complete_files(checkpoint: str) -> Optional[list]:
  """The files of a checkpoint prefix, or None if the .index or a shard is
  missing."""
  files = tf.io.gfile.glob(checkpoint + '.*')
  names = {os.path.basename(f) for f in files}
  shards = [n for n in names if re.search(r'\.data-\d+-of-\d+$', n)]
  wanted = int(shards[0].rsplit('-of-', 1)[1]) if shards else -1
  if (os.path.basename(checkpoint) + '.index' not in names
      or len(shards) != wanted):
    return None
  return files


def is_complete(checkpoint: str) -> bool:
  """Whether the checkpoint's .index and every data shard exist."""
  return _complete_files(checkpoint) is not None


def hold_files(checkpoint: str, directory: str) -> bool:
  """Puts every file of the checkpoint prefix into `directory` (existing).

  Locally the files are hard-linked (no copy; a checkpoint's files are never
  rewritten, and the manager's deletion unlinks only its own names); on
  gs:// or where links fail they are copied.

  Returns:
    False when the checkpoint is gone or incomplete (its .index or one of
    its data shards missing), e.g. deleted by the trainer meanwhile.
  """
  files = _complete_files(checkpoint)
  if files is None:
    return False
  try:
    for path in files:
      target = os.path.join(directory, os.path.basename(path))
      if '://' not in path:
        try:
          os.link(path, target)
          continue
        except OSError as e:
          if e.errno == errno.ENOENT:
            return False
      tf.io.gfile.copy(path, target, overwrite=True)
  except tf.errors.NotFoundError:
    return False
  return True


def update_best(workdir: str, checkpoint: str, step: int,
                metrics: Dict[str, float], select: str) -> bool:
  """Copies `checkpoint` to W/best/ if its `select` value beats the kept one.

  Returns:
    True when the copy was replaced.
  """
  key = selection_key(select)
  if key not in metrics:
    return False
  value = float(metrics[key])
  kept = read_best(workdir)
  if kept is not None and kept.get('metric') == key and not is_better(
      key, value, kept['value']):
    return False
  best_dir = os.path.join(workdir, BEST_DIR)
  tmp_dir = best_dir + f'.tmp-{step}'
  if tf.io.gfile.exists(tmp_dir):
    tf.io.gfile.rmtree(tmp_dir)
  tf.io.gfile.makedirs(tmp_dir)
  prefix = os.path.basename(checkpoint)
  if not hold_files(checkpoint, tmp_dir):
    # The trainer's checkpoint manager deleted it while it was evaluated
    # (train.keep_checkpoints): a best.json without its checkpoint would
    # be worse than the copy kept.
    tf.io.gfile.rmtree(tmp_dir)
    logging.warning('%s is better by %s (%.4g) but was deleted before it '
                    'could be copied; W/best/ is unchanged.', checkpoint, key,
                    value)
    return False
  info = {'step': int(step), 'metric': key, 'value': value,
          'metrics': metrics, 'prefix': prefix}
  with tf.io.gfile.GFile(os.path.join(tmp_dir, BEST_JSON), 'w') as f:
    json.dump(info, f, indent=2, sort_keys=True, default=float)
  old_dir = best_dir + '.old'
  if tf.io.gfile.exists(old_dir):
    tf.io.gfile.rmtree(old_dir)
  if tf.io.gfile.exists(best_dir):
    tf.io.gfile.rename(best_dir, old_dir)
  tf.io.gfile.rename(tmp_dir, best_dir)
  if tf.io.gfile.exists(old_dir):
    tf.io.gfile.rmtree(old_dir)
  return True
