"""The best checkpoint of a run, kept in W/best/ out of the manager's reach.

The rule: a step's selection metric (direction known per metric) replaces the
kept copy only when it is strictly better; NaN never is, and a kept NaN (an
older writer's) is beaten by any number.

The protocol (docs/watching.md), crash-safe on local disks and on gs://,
where renaming a directory is a copy and a delete per object:
  1. copy: the checkpoint's files go into a new, immutable W/best/ckpt-STEP/
     (hard links locally, copies on gs://);
  2. pointer: W/best/best.json (step, metric, value, the step's other
     metrics, 'settings' and 'fingerprint' of the evaluation the value comes
     from (`settings.py`), 'checkpoint': the copy's prefix relative to
     W/best) is written with `files.write_json`, one atomic object write;
  3. the previous copy is deleted, only now that nothing points to it.
Readers go through the pointer only (`workdir_layout.best_checkpoint`), so a
kill anywhere leaves them the old or the new best, whole. `clean` removes the
leftovers (copies the pointer does not name, the legacy writer's W/best.tmp-*
and W/best.old) when the watcher starts, after `rebuild` has used them, and
never the only copy of a best.

Like with like: a value is compared only with the kept one when both come
from evaluations with the same settings (the same fingerprint; None is the
group of unknown settings, results written before settings were keyed).
"""

import errno
import json
import math
import os
import re
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence

from absl import logging
import tensorflow as tf

from bigbigan_tf import files
from bigbigan_tf import workdir_layout
from bigbigan_tf.evaluation import settings as settings_lib

BEST_DIR = workdir_layout.BEST_DIR
BEST_JSON = workdir_layout.BEST_JSON
read_best = workdir_layout.read_best
best_checkpoint = workdir_layout.best_checkpoint

# True: higher is better. Keys are the metric names evaluate_lib writes.
DIRECTIONS = {
    'fid': False, 'kid': False, 'digit_fid': False,
    'is': True, 'recon_accuracy': True, 'linear_probe/top1': True,
    'linear_probe/top5': True,
}
ALIASES = {'linear_probe': 'linear_probe/top1', 'probe': 'linear_probe/top1'}
# --select=auto: the first of these that is computed.
AUTO_ORDER = ('fid', 'linear_probe', 'recon_accuracy', 'digit_fid', 'kid',
              'is')


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


def _finite(value: Optional[float]) -> bool:
  return value is not None and math.isfinite(float(value))


def is_better(metric: str, value: float, than: Optional[float]) -> bool:
  """Whether `value` of `metric` strictly beats `than`.

  A NaN or infinite `value` never does; a `than` of None (nothing kept) or
  NaN is beaten by any finite value.
  """
  if not _finite(value):
    return False
  if not _finite(than):
    return True
  higher = DIRECTIONS[selection_key(metric)]
  return value > than if higher else value < than


def _complete_files(checkpoint: str) -> Optional[list]:
  """The files of a checkpoint prefix, or None if the .index or a shard is
  missing."""
  files_ = tf.io.gfile.glob(checkpoint + '.*')
  names = {os.path.basename(f) for f in files_}
  shards = [n for n in names if re.search(r'\.data-\d+-of-\d+$', n)]
  wanted = int(shards[0].rsplit('-of-', 1)[1]) if shards else -1
  if (os.path.basename(checkpoint) + '.index' not in names
      or len(shards) != wanted):
    return None
  return files_


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
  found = _complete_files(checkpoint)
  if found is None:
    return False
  try:
    for path in found:
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


def same_selection(kept: Optional[Dict[str, Any]], key: str,
                   fp: Optional[str]) -> bool:
  """Whether the kept best was chosen by `key` under the settings `fp`."""
  return (kept is not None and kept.get('metric') == key
          and kept.get('fingerprint') == fp)


def _kept_value(kept: Optional[Dict[str, Any]], key: str,
                fp: Optional[str]) -> Optional[float]:
  """The kept best's value when it was chosen by `key` under the settings
  `fp`, else None (another selection: never compared)."""
  if not same_selection(kept, key, fp):
    return None
  return kept.get('value')


def _copy_name(step: int, kept: Optional[Dict[str, Any]]) -> str:
  """W/best/ckpt-STEP, or ckpt-STEP.K when the pointer names that one (a
  step saved again and evaluated again): a copy is never rewritten."""
  taken = ('' if kept is None or kept.get('legacy')
           else kept['checkpoint'].split('/')[0])
  name, k = f'ckpt-{step}', 0
  while name == taken:
    k += 1
    name = f'ckpt-{step}.{k}'
  return name


def hold_into(checkpoint: str, directory: str) -> bool:
  """`hold_files` into a fresh `directory`, which is removed on failure.

  A directory already there (a killed copy's or hold's partial files) is
  replaced. Returns False, leaving nothing, when the checkpoint is gone or
  incomplete.
  """
  if tf.io.gfile.exists(directory):
    tf.io.gfile.rmtree(directory)
  tf.io.gfile.makedirs(directory)
  if hold_files(checkpoint, directory):
    return True
  tf.io.gfile.rmtree(directory)
  return False


def _copy(source: str, copy_dir: str) -> bool:
  """Step 1: the checkpoint's files into a fresh `copy_dir`."""
  return hold_into(source, copy_dir)


def _write_pointer(workdir: str, info: Dict[str, Any]) -> None:
  """Step 2: the pointer, one atomic object write."""
  files.write_json(workdir_layout.pointer_path(workdir), info, default=float)


def _remove_copy(workdir: str, kept: Optional[Dict[str, Any]]) -> None:
  """Step 3: the copy the pointer named before (legacy: its files)."""
  if kept is None:
    return
  prefix = os.path.join(workdir_layout.best_dir(workdir), kept['checkpoint'])
  if kept.get('legacy'):
    for path in tf.io.gfile.glob(prefix + '.*'):
      tf.io.gfile.remove(path)
  elif tf.io.gfile.exists(os.path.dirname(prefix)):
    tf.io.gfile.rmtree(os.path.dirname(prefix))


def _pointer(step: int, key: str, metrics: Dict[str, Any],
             settings: Optional[Dict[str, Any]], checkpoint: str
             ) -> Dict[str, Any]:
  return {'step': int(step), 'metric': key, 'value': float(metrics[key]),
          'metrics': dict(metrics), 'settings': settings,
          'fingerprint': settings_lib.fingerprint(settings),
          'checkpoint': checkpoint}


def install(workdir: str, source: str, step: int, key: str,
            metrics: Dict[str, Any],
            settings: Optional[Dict[str, Any]] = None,
            check: Optional[Callable[[], None]] = None) -> bool:
  """Makes `source` (a complete checkpoint prefix) the kept best.

  Copy, then pointer, then removal of the previous copy.

  Args:
    workdir: the run's workdir.
    source: the checkpoint prefix to keep.
    step: its step.
    key: the selection metric's results key.
    metrics: its metrics (with `key`).
    settings: the settings they were computed with (None: unknown).
    check: the evaluator's lease check, called before the pointer is
      written (a fenced-out evaluator must not move the best).

  Returns:
    False when `source` is gone or incomplete (W/best is unchanged).
  """
  kept = read_best(workdir)
  name = _copy_name(step, kept)
  prefix = os.path.basename(source)
  if not _copy(source, os.path.join(workdir_layout.best_dir(workdir), name)):
    return False
  if check is not None:
    check()
  _write_pointer(workdir, _pointer(step, key, metrics, settings,
                                   f'{name}/{prefix}'))
  _remove_copy(workdir, kept)
  return True


def restamp(workdir: str, key: str, metrics: Dict[str, Any],
            settings: Optional[Dict[str, Any]]) -> None:
  """Re-labels the kept copy with its figures under other settings (it was
  evaluated again): one pointer write, the copy stays."""
  kept = read_best(workdir)
  _write_pointer(workdir, _pointer(kept['step'], key, metrics, settings,
                                   kept['checkpoint']))


def update_best(workdir: str, checkpoint: str, step: int,
                metrics: Dict[str, float], select: str,
                settings: Optional[Dict[str, Any]] = None,
                check: Optional[Callable[[], None]] = None) -> bool:
  """Copies `checkpoint` to W/best/ if its `select` value beats the kept one.

  Only a kept value of the same settings is compared; a best kept under
  other settings (or by another metric) is replaced by any finite value:
  a new selection (the watcher re-evaluates it first, `watch.rebuild_best`).

  Returns:
    True when the kept best was replaced.
  """
  key = selection_key(select)
  if key not in metrics:
    return False
  value = float(metrics[key])
  kept_value = _kept_value(read_best(workdir), key,
                           settings_lib.fingerprint(settings))
  if not is_better(key, value, kept_value):
    return False
  if install(workdir, checkpoint, step, key, metrics, settings, check):
    return True
  # The trainer's checkpoint manager deleted it while it was evaluated
  # (train.keep_checkpoints): a pointer without its checkpoint would be
  # worse than the copy kept.
  logging.warning('%s is better by %s (%.4g) but was deleted before it '
                  'could be copied; W/best/ is unchanged.', checkpoint, key,
                  value)
  return False


def legacy_sources(workdir: str, step: int) -> List[str]:
  """Complete copies of `step` the legacy writer may have left (W/best.old,
  W/best.tmp-STEP: each whole once its best.json was written)."""
  found = []
  for name in (workdir_layout.LEGACY_OLD,
               f'{workdir_layout.LEGACY_TEMP_PREFIX}{step}'):
    directory = os.path.join(workdir, name)
    if tf.io.gfile.exists(os.path.join(directory, BEST_JSON)):
      found.append(os.path.join(directory, f'ckpt-{step}'))
  return found


def migrate_legacy(workdir: str) -> bool:
  """Moves a legacy W/best (files beside best.json) into W/best/ckpt-STEP/.

  Same protocol: copy (links locally), pointer, then the old files go.
  """
  kept = read_best(workdir)
  if kept is None or not kept.get('legacy'):
    return False
  source = workdir_layout.best_checkpoint(workdir)
  metrics = dict(kept.get('metrics') or {}, **{kept['metric']: kept['value']})
  if install(workdir, source, kept['step'], kept['metric'], metrics,
             kept.get('settings')):
    logging.info('Moved the best checkpoint of the older layout (%s) into %s.',
                 source, workdir_layout.best_checkpoint(workdir))
    return True
  return False


def adopt_legacy_leftovers(workdir: str) -> Optional[int]:
  """With no pointer in W/best, makes a whole best the legacy writer left
  in W/best.tmp-STEP (newest first) or W/best.old the kept one.

  The legacy writer renamed W/best to W/best.old before renaming its new
  copy in: killed in between, those leftovers hold the only copies.

  Returns:
    The step adopted, or None.
  """
  if read_best(workdir) is not None:
    return None
  found = []
  for path in tf.io.gfile.glob(os.path.join(
      workdir, workdir_layout.LEGACY_TEMP_PREFIX + '*')) + [
          os.path.join(workdir, workdir_layout.LEGACY_OLD)]:
    info = _read_json(os.path.join(path, BEST_JSON))
    if info and 'step' in info and 'metric' in info and 'value' in info:
      found.append((path != os.path.join(workdir, workdir_layout.LEGACY_OLD),
                    info['step'], path, info))
  for _, step, path, info in sorted(found, reverse=True):
    source = os.path.join(path, info.get('prefix') or f'ckpt-{step}')
    metrics = dict(info.get('metrics') or {}, **{info['metric']:
                                                 info['value']})
    if is_complete(source) and install(workdir, source, step, info['metric'],
                                       metrics, info.get('settings')):
      logging.info('W/best had no pointer; kept step %d from %s, which an '
                   'interrupted update of the older layout left.', step, path)
      return step
  return None


def _read_json(path: str) -> Optional[Dict[str, Any]]:
  try:
    with tf.io.gfile.GFile(path) as f:
      found = json.load(f)
  except (tf.errors.NotFoundError, ValueError):
    return None
  return found if isinstance(found, dict) else None


def rebuild(workdir: str, select: str,
            candidates: Iterable[Dict[str, Any]],
            settings: Optional[Dict[str, Any]] = None) -> Optional[int]:
  """Makes W/best the best of `candidates` that still has a checkpoint.

  Run when the watcher starts: a kill between a step's results and the end
  of its copy costs nothing.

  Args:
    workdir: the run's workdir.
    select: the selection metric.
    candidates: steps evaluated with `settings`: {'step', 'metrics',
      'sources': checkpoint prefixes of that evaluated checkpoint, in order
      of preference}.
    settings: the settings of the candidates' figures (None: unknown); a
      best kept under other settings is not compared (any candidate
      replaces it).

  Returns:
    The step newly kept, or None when W/best was already right.
  """
  key = selection_key(select)
  kept = read_best(workdir)
  kept_value = _kept_value(kept, key, settings_lib.fingerprint(settings))
  ranked = sorted(
      (c for c in candidates if _finite(c['metrics'].get(key))),
      key=lambda c: (-c['metrics'][key] if DIRECTIONS[key]
                     else c['metrics'][key], c['step']))
  for candidate in ranked:
    step, value = candidate['step'], float(candidate['metrics'][key])
    if kept_value is not None and kept['step'] == step and (
        value == kept_value):
      return None
    if not is_better(key, value, kept_value):
      return None
    for source in _complete(candidate['sources']):
      if install(workdir, source, step, key, candidate['metrics'], settings):
        logging.info('W/best is now step %d (%s = %.4g), rebuilt from the '
                     'results in %s/eval.', step, key, value, workdir)
        return step
    logging.warning(
        'Step %d has the best %s (%.4g) of the results, but its checkpoint '
        'is no longer on disk (deleted by train.keep_checkpoints and not '
        'held): it cannot become W/best; trying the next.', step, key, value)
  return None


def _complete(sources: Sequence[str]) -> Iterable[str]:
  return (s for s in sources if is_complete(s))


def clean(workdir: str) -> List[str]:
  """Removes what a killed update left: copies the pointer does not name,
  temporary pointer files, the legacy W/best.tmp-* and W/best.old.

  Only one evaluator may run it (the watcher holds W/eval's lease).

  Returns:
    The removed paths.
  """
  kept = read_best(workdir)
  best_dir = workdir_layout.best_dir(workdir)
  named = (kept or {}).get('checkpoint', '')
  keep_dir = '' if (kept or {}).get('legacy') else named.split('/')[0]
  removed = []
  for path in tf.io.gfile.glob(os.path.join(best_dir, '*')):
    name = os.path.basename(path.rstrip('/'))
    if name == BEST_JSON or name == keep_dir:
      continue
    if kept and kept.get('legacy') and name.startswith(named + '.'):
      continue  # the legacy copy's own files
    if name.startswith('ckpt-') or name.startswith(BEST_JSON + '.tmp-'):
      removed.append(path)
  # The legacy writer's siblings may hold the only copy of a best (killed
  # mid-swap, or nothing rebuilt from them): they go only once W/best holds
  # a whole best of its own.
  if kept is not None and is_complete(best_checkpoint(workdir)):
    removed += tf.io.gfile.glob(
        os.path.join(workdir, workdir_layout.LEGACY_TEMP_PREFIX + '*'))
    legacy_old = os.path.join(workdir, workdir_layout.LEGACY_OLD)
    if tf.io.gfile.exists(legacy_old):
      removed.append(legacy_old)
  for path in removed:
    if tf.io.gfile.isdir(path):
      tf.io.gfile.rmtree(path)
    else:
      tf.io.gfile.remove(path)
  if removed:
    logging.info('Removed what an interrupted best-checkpoint update left: '
                 '%s.', ', '.join(removed))
  return removed
