"""The sidecar evaluator: follows a run's checkpoints and keeps the best one.

`watch` polls W/checkpoints, evaluates each checkpoint not evaluated yet
(newest first when behind), writes the usual outputs through `evaluate_fn`
(evaluate_lib.evaluate: W/eval/results_step{N}.json, TensorBoard scalars and
grids at the checkpoint's step) and updates W/best/ by `best.update_best`.

A checkpoint is held as soon as it is seen: its files are hard-linked (copied
on gs://) into W/eval/held-{step}/, so the trainer's checkpoint manager
(train.keep_checkpoints) can delete it while the watcher is behind, and it is
still evaluated and can still become the best. At most `max_held` wait; when
more do, the oldest are let go (skipped, and the log says so).

Restart-safe: a step whose results_step{N}.json (or skipped_step{N}) exists
is done, so a killed and restarted watcher evaluates nothing twice; held
copies survive a restart. It ends when the run's final step has been
evaluated and no older checkpoint is waiting, or when no new checkpoint
appears for `timeout_s`.
"""

import os
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

from absl import logging
import tensorflow as tf

from bigbigan_tf import checkpoints
from bigbigan_tf.evaluation import best

EVAL_DIR = 'eval'
# W/eval/held-{step}/: a checkpoint's files, held while it is evaluated.
HELD_PREFIX = 'held-'
# Checkpoints waiting in W/eval/held-*, by default.
DEFAULT_MAX_HELD = 10
# evaluate_fn(path to read, checkpoint path the results name).
EvaluateFn = Callable[[str, str], Dict[str, Any]]


def results_path(workdir: str, step: int) -> str:
  return os.path.join(workdir, EVAL_DIR, f'results_step{step}.json')


def is_done(workdir: str, step: int) -> bool:
  """Whether `step` was evaluated (or skipped) already, by its files."""
  return (tf.io.gfile.exists(results_path(workdir, step)) or
          tf.io.gfile.exists(_skipped_path(workdir, step)))


def _skipped_path(workdir: str, step: int) -> str:
  return os.path.join(workdir, EVAL_DIR, f'skipped_step{step}')


def _pending(workdir: str) -> list:
  """(step, prefix) of checkpoints not evaluated yet, newest first."""
  ckpt_dir = os.path.join(workdir, checkpoints.CHECKPOINT_DIR)
  found = []
  for path in checkpoints.checkpoint_paths(ckpt_dir):
    step = checkpoints._step_of(path)  # pylint: disable=protected-access
    if step >= 0 and not is_done(workdir, step):
      found.append((step, path))
  return found


def _held_dir(workdir: str, step: int) -> str:
  return os.path.join(workdir, EVAL_DIR, f'{HELD_PREFIX}{step}')


def hold(workdir: str, checkpoint: str, step: int) -> Optional[str]:
  """Holds `checkpoint` in W/eval/held-{step}/; its held prefix, or None.

  None when the checkpoint is gone or incomplete (nothing is left behind).
  """
  _release(workdir, step)  # a killed watcher's partial copy
  held = _held_dir(workdir, step)
  tf.io.gfile.makedirs(held)
  if not best.hold_files(checkpoint, held):
    _release(workdir, step)
    return None
  return os.path.join(held, os.path.basename(checkpoint))


def _release(workdir: str, step: int) -> None:
  held = _held_dir(workdir, step)
  if tf.io.gfile.exists(held):
    tf.io.gfile.rmtree(held)


def held_checkpoints(workdir: str) -> Dict[int, str]:
  """{step: held prefix} of checkpoints held and not evaluated yet.

  Held copies of evaluated steps, and incomplete ones (a watcher killed
  while linking), are removed.
  """
  found = {}
  pattern = os.path.join(workdir, EVAL_DIR, HELD_PREFIX + '*')
  for held in tf.io.gfile.glob(pattern):
    name = os.path.basename(held.rstrip('/'))
    step_text = name[len(HELD_PREFIX):]
    if not step_text.isdigit():
      continue
    step = int(step_text)
    prefix = os.path.join(held, f'ckpt-{step}')
    if is_done(workdir, step) or not best.is_complete(prefix):
      tf.io.gfile.rmtree(held)
    else:
      found[step] = prefix
  return found


def plan(config, metrics: Optional[Sequence[str]], select: str
         ) -> Tuple[List[str], str]:
  """The metrics to compute and the metric choosing W/best/.

  Args:
    config: the run's config.
    metrics: metric names, or None / empty for the data's default.
    select: a metric of best.DIRECTIONS (or an alias), or 'auto': fid when
      computed, else the linear probe, else digit_fid, recon_accuracy, kid
      or is, the first computed.

  Returns:
    (metric names, selection metric).

  Raises:
    evaluate_lib.EvaluationError: an unknown metric, or a selection metric
      that is not computed.
  """
  from bigbigan_tf.evaluation import evaluate_lib  # pylint: disable=g-import-not-at-top
  names = (evaluate_lib.check_metrics(list(metrics)) if metrics
           else evaluate_lib.default_metrics(config))
  if select == 'auto':
    # FID where Inception loads, else the probe, else what is computed.
    order = ('fid', 'linear_probe', 'digit_fid', 'recon_accuracy', 'kid',
             'is')
    select = next((m for m in order if m in names), 'linear_probe')
  try:
    key = best.selection_key(select)
  except ValueError as e:
    raise evaluate_lib.EvaluationError(str(e)) from None
  if key.split('/')[0] not in names:
    raise evaluate_lib.EvaluationError(
        f'The selection metric {select} needs {key.split("/")[0]} among the '
        f'metrics (have {",".join(names)}): add it, or select one of those.')
  return names, select


def evaluate_and_select(workdir: str, checkpoint: str, step: int,
                        evaluate_fn: EvaluateFn, select: Optional[str], *,
                        path: Optional[str] = None
                        ) -> Optional[Dict[str, Any]]:
  """Evaluates one checkpoint and updates W/best/; None if it vanished.

  Args:
    workdir: the run's workdir.
    checkpoint: the checkpoint's path in W/checkpoints (the results name it).
    step: its step.
    evaluate_fn: evaluate_fn(path to read, checkpoint) writes the outputs.
    select: the selection metric of W/best/, or None.
    path: the files to read, when not `checkpoint` itself: the watcher's
      held copy, which the trainer's deletions cannot reach.
  """
  path = path or checkpoint
  if not tf.io.gfile.exists(path + '.index'):
    logging.warning('Checkpoint %s was deleted before its turn; skipped.',
                    checkpoint)
    return None
  start = time.time()
  try:
    result = evaluate_fn(path, checkpoint)
  except (FileNotFoundError, checkpoints.UnreadableCheckpointError) as e:
    logging.warning('Checkpoint %s could not be evaluated (deleted while it '
                    'was read?); skipped: %s', checkpoint, e)
    return None
  logging.info('Evaluated step %d in %.1f s: %s', step, time.time() - start,
               result.get('metrics'))
  if select and best.update_best(workdir, path, step,
                                 dict(result.get('metrics', {})), select):
    logging.info('Step %d is the new best by %s; copied to %s.', step,
                 select, os.path.join(workdir, best.BEST_DIR))
  return result


def watch(workdir: str, evaluate_fn: EvaluateFn, *,
          final_step: Union[int, Callable[[], int]], select: Optional[str],
          timeout_s: float, poll_s: float = 5.0,
          max_held: int = DEFAULT_MAX_HELD) -> str:
  """Evaluates new checkpoints until the final step or a timeout.

  Args:
    workdir: the run's workdir (gs:// ok).
    evaluate_fn: evaluates a checkpoint prefix (its held copy) and writes
      its outputs naming the checkpoint: evaluate_fn(path, checkpoint).
    final_step: the run's num_train_steps, or a function reading it anew
      (a run resumed with more steps extends the watch); done once that
      step is evaluated and no older checkpoint waits.
    select: selection metric for W/best/ (None: keep no best copy).
    timeout_s: give up after this long without a new checkpoint.
    poll_s: seconds between looks at W/checkpoints.
    max_held: at most this many checkpoints wait in W/eval/held-*; beyond,
      the oldest are let go and skipped.

  Returns:
    Why it ended: a one-line message.
  """
  last_new = time.time()
  ckpt_dir = os.path.join(workdir, checkpoints.CHECKPOINT_DIR)
  while True:
    final = final_step() if callable(final_step) else final_step
    held = _hold_new(workdir, held_checkpoints(workdir), max_held)
    if held:
      step = max(held)  # newest first
      evaluate_and_select(workdir, os.path.join(ckpt_dir, f'ckpt-{step}'),
                          step, evaluate_fn, select, path=held[step])
      if not is_done(workdir, step):
        # Unreadable or wrote nothing: do not try it again.
        _mark_skipped(workdir, step)
      _release(workdir, step)
      last_new = time.time()
      continue
    if is_done(workdir, final):
      return f'The final step {final} is evaluated; done.'
    if time.time() - last_new > timeout_s:
      return (f'No new checkpoint in {ckpt_dir} for {timeout_s:g} s '
              '(--timeout_s); stopping.')
    time.sleep(poll_s)


def _hold_new(workdir: str, held: Dict[int, str],
              max_held: int) -> Dict[int, str]:
  """Holds the checkpoints not evaluated or held yet; lets go beyond max_held."""
  for step, path in _pending(workdir):
    if step in held:
      continue
    prefix = hold(workdir, path, step)
    if prefix is None:
      logging.warning('Checkpoint %s was deleted before the watcher could '
                      'hold it (the trainer keeps train.keep_checkpoints); '
                      'skipped.', path)
      _mark_skipped(workdir, step)
    else:
      held[step] = prefix
  for step in sorted(held)[:max(len(held) - max_held, 0)]:
    logging.warning('The watcher is more than --max_held=%d checkpoints '
                    'behind: step %d is let go and skipped.', max_held, step)
    _mark_skipped(workdir, step)
    _release(workdir, step)
    del held[step]
  return held


def _mark_skipped(workdir: str, step: int) -> None:
  """Records a skipped step so a restart does not try it again."""
  tf.io.gfile.makedirs(os.path.join(workdir, EVAL_DIR))
  with tf.io.gfile.GFile(_skipped_path(workdir, step), 'w') as f:
    f.write('skipped: the checkpoint was gone or unreadable at its turn\n')
