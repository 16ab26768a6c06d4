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
from typing import Any, Callable, Dict, Optional

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
          final_step: int, select: Optional[str], timeout_s: float,
          poll_s: float = 5.0) -> str:
  """Evaluates new checkpoints until the final step or a timeout.

  Args:
    workdir: the run's workdir (gs:// ok).
    evaluate_fn: evaluates a checkpoint prefix and writes its outputs.
    final_step: the run's num_train_steps; done once it is evaluated.
    select: selection metric for W/best/ (None: keep no best copy).
    timeout_s: give up after this long without a new checkpoint.
    poll_s: seconds between looks at W/checkpoints.

  Returns:
    Why it ended: a one-line message.
  """
  last_new = time.time()
  while True:
    if is_done(workdir, final_step):
      return f'The final step {final_step} is evaluated; done.'
    pending = _pending(workdir)
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
