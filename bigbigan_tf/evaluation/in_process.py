"""config.eval inside training: the chief evaluates after a checkpoint.

The evaluation library is imported only when a run evaluates, so training
without config.eval.every_steps loads none of it.
"""

import time

from absl import logging
import ml_collections

from bigbigan_tf import config_lib
from bigbigan_tf import defaults


class InProcessEvaluation:
  """config.eval inside training: the chief evaluates after a checkpoint.

  The same library, outputs and best-checkpoint rule as the sidecar
  (`eval/evaluate.py --watch`, bigbigan_tf/evaluation/watch.py).
  """

  def __init__(self, config: ml_collections.ConfigDict, workdir: str, *,
               chief: bool):
    """Checks the metrics before training starts.

    Raises:
      config_lib.ConfigError: an unknown metric or selection metric.
    """
    from bigbigan_tf.evaluation import evaluate_lib  # pylint: disable=g-import-not-at-top
    from bigbigan_tf.evaluation import watch  # pylint: disable=g-import-not-at-top
    self._evaluate_lib, self._watch = evaluate_lib, watch
    self.workdir, self.num_samples = workdir, config.eval.num_samples
    self.every = config.eval.every_steps if chief else 0
    if not config.eval.every_steps:
      return
    metrics = [m.strip() for m in config.eval.metrics.split(',') if m.strip()]
    try:
      # As the watcher's: metrics that cannot run here (Inception offline)
      # are named once and dropped, and 'auto' picks from what is left.
      self.metrics, self.select = watch.plan(
          config, metrics or None, config.eval.select,
          inception=defaults.INCEPTION_HANDLE if self.every else None)
    except evaluate_lib.EvaluationError as e:
      raise config_lib.ConfigError(
          f'config.eval.metrics = {config.eval.metrics!r}, config.eval.select '
          f'= {config.eval.select!r}: {e}') from None
    if self.every:  # beside a running watcher: refused now, not at step N
      with watch.evaluator_lease(workdir, config):
        pass

  def due(self, step: int, total: int) -> bool:
    return bool(self.every) and (step % self.every == 0 or step == total)

  def __call__(self, checkpoint: str, step: int) -> float:
    """Evaluates `checkpoint` (at `step`); returns the seconds it took."""
    start = time.time()

    def evaluate_fn(path, unused_checkpoint):
      return self._evaluate_lib.evaluate(
          self.workdir, metrics=self.metrics, checkpoint=path,
          num_samples=self.num_samples)

    # Read in place: the manager deletes a checkpoint only at a later save.
    with self._watch.evaluator_lease(self.workdir):  # one evaluator per run
      self._watch.evaluate_and_select(self.workdir, checkpoint, step,
                                      evaluate_fn, self.select)
    seconds = time.time() - start
    logging.info('In-process evaluation of step %d took %.1f s (kept out of '
                 'images/s and the ETA).', step, seconds)
    return seconds
