"""The sidecar evaluator: follows a run's checkpoints and keeps the best one.

`watch` polls W/checkpoints, evaluates each checkpoint not evaluated yet
(newest first when behind), writes the usual outputs through `evaluate_fn`
(evaluate_lib.evaluate: W/eval/results_step{N}.json, TensorBoard scalars and
grids at the checkpoint's step) and updates W/best/ by `best.update_best`.
Restart-safe: a step whose results_step{N}.json exists is done, so a killed
and restarted watcher evaluates nothing twice. It ends when the run's final
step has been evaluated, or when no new checkpoint appears for `timeout_s`.
"""

import os
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

from absl import logging
import tensorflow as tf

from bigbigan_tf import checkpoints
from bigbigan_tf.evaluation import best

EVAL_DIR = 'eval'


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
                        evaluate_fn: Callable[[str], Dict[str, Any]],
                        select: Optional[str]) -> Optional[Dict[str, Any]]:
  """Evaluates one checkpoint and updates W/best/; None if it vanished."""
  if not tf.io.gfile.exists(checkpoint + '.index'):
    logging.warning('Checkpoint %s was deleted before its turn; skipped.',
                    checkpoint)
    return None
  start = time.time()
  try:
    result = evaluate_fn(checkpoint)
  except (FileNotFoundError, checkpoints.UnreadableCheckpointError) as e:
    logging.warning('Checkpoint %s could not be evaluated (deleted while it '
                    'was read?); skipped: %s', checkpoint, e)
    return None
  logging.info('Evaluated step %d in %.1f s: %s', step, time.time() - start,
               result.get('metrics'))
  if select and best.update_best(workdir, checkpoint, step,
                                 dict(result.get('metrics', {})), select):
    logging.info('Step %d is the new best by %s; copied to %s.', step,
                 select, os.path.join(workdir, best.BEST_DIR))
  return result


def watch(workdir: str, evaluate_fn: Callable[[str], Dict[str, Any]], *,
          final_step: Union[int, Callable[[], int]], select: Optional[str],
          timeout_s: float,
          poll_s: float = 5.0) -> str:
  """Evaluates new checkpoints until the final step or a timeout.

  Args:
    workdir: the run's workdir (gs:// ok).
    evaluate_fn: evaluates a checkpoint prefix and writes its outputs.
    final_step: the run's num_train_steps, or a function reading it anew
      (a run resumed with more steps extends the watch); done once that
      step is evaluated.
    select: selection metric for W/best/ (None: keep no best copy).
    timeout_s: give up after this long without a new checkpoint.
    poll_s: seconds between looks at W/checkpoints.

  Returns:
    Why it ended: a one-line message.
  """
  last_new = time.time()
  seen = set()
  while True:
    final = final_step() if callable(final_step) else final_step
    if is_done(workdir, final):
      return f'The final step {final} is evaluated; done.'
    pending = _pending(workdir)
    # A step listed before but gone now, unevaluated: the trainer's
    # checkpoint manager deleted it while the watcher was behind.
    for step in sorted(seen - {s for s, _ in pending}):
      if not is_done(workdir, step):
        logging.warning('Checkpoint of step %d was deleted before its turn '
                        '(the trainer keeps train.keep_checkpoints); '
                        'skipped.', step)
        _mark_skipped(workdir, step)
    seen = {s for s, _ in pending}
    if pending:
      step, path = pending[0]
      evaluate_and_select(workdir, path, step, evaluate_fn, select)
      if not is_done(workdir, step):
        # Skipped (deleted) or wrote nothing: do not try it again.
        _mark_skipped(workdir, step)
      last_new = time.time()
      continue
    if time.time() - last_new > timeout_s:
      return (f'No new checkpoint in {os.path.join(workdir, "checkpoints")} '
              f'for {timeout_s:g} s (--timeout_s); stopping.')
    time.sleep(poll_s)


def _mark_skipped(workdir: str, step: int) -> None:
  """Records a skipped step so a restart does not try it again."""
  tf.io.gfile.makedirs(os.path.join(workdir, EVAL_DIR))
  with tf.io.gfile.GFile(_skipped_path(workdir, step), 'w') as f:
    f.write('skipped: the checkpoint was gone or unreadable at its turn\n')
