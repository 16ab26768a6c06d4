"""config.eval inside training: the chief evaluates after a checkpoint.

The evaluation library is imported only when a run evaluates, so training
without config.eval.every_steps loads none of it.
"""

import time

from absl import logging
import ml_collections

from bigbigan_tf import config_lib
from bigbigan_tf import defaults
from bigbigan_tf import lease


class InProcessEvaluation:
  """config.eval inside training: the chief evaluates after a checkpoint.

  The same library, outputs and best-checkpoint rule as the sidecar
  (`eval/evaluate.py --watch`, bigbigan_tf/evaluation/watch.py), with the
  settings of config.eval and evaluate's defaults. Training never stops for
  evaluation: while another evaluator (a watcher) holds W/eval's lease, a
  due step is skipped with one log line. The first evaluation rebuilds and
  cleans W/best, as a starting watcher does.
  """

  def __init__(self, config: ml_collections.ConfigDict, workdir: str, *,
               chief: bool):
    """Checks the metrics before training starts.

    Raises:
      config_lib.ConfigError: an unknown metric or selection metric.
    """
    from bigbigan_tf.evaluation import evaluate_lib  # pylint: disable=g-import-not-at-top
    from bigbigan_tf.evaluation import settings as settings_lib  # pylint: disable=g-import-not-at-top
    from bigbigan_tf.evaluation import watch  # pylint: disable=g-import-not-at-top
    self._evaluate_lib, self._watch = evaluate_lib, watch
    self.workdir, self.num_samples = workdir, config.eval.num_samples
    self.config = config
    self.every = config.eval.every_steps if chief else 0
    self.rebuilt = False
    if not config.eval.every_steps:
      return
    metrics = [m.strip() for m in config.eval.metrics.split(',') if m.strip()]
    try:
      # As the watcher's: metrics that cannot run here (Inception offline)
      # are named once and dropped, and 'auto' picks from what is left.
      self.metrics, self.select, inception_source = watch.plan(
          config, metrics or None, config.eval.select,
          inception=defaults.INCEPTION_HANDLE if self.every else None)
    except evaluate_lib.EvaluationError as e:
      raise config_lib.ConfigError(
          f'config.eval.metrics = {config.eval.metrics!r}, config.eval.select '
          f'= {config.eval.select!r}: {e}') from None
    # What evaluate() computes with its defaults and these metrics.
    self.settings = settings_lib.comparable(
        config, metrics=self.metrics, inception_source=inception_source,
        num_samples=self.num_samples, feature=defaults.PROBE_FEATURE, seed=0,
        probe_epochs=defaults.PROBE_EPOCHS,
        digit_classifier_epochs=defaults.DIGIT_CLASSIFIER_EPOCHS,
        prdc_k=defaults.PRDC_K,
        standing_stats_batches=defaults.STANDING_STATS_BATCHES)

  def due(self, step: int, total: int) -> bool:
    return bool(self.every) and (step % self.every == 0 or step == total)

  def _evaluate_fn(self, path, unused_checkpoint, before_write=None):
    return self._evaluate_lib.evaluate(
        self.workdir, metrics=self.metrics, checkpoint=path,
        num_samples=self.num_samples, before_write=before_write)

  def __call__(self, checkpoint: str, step: int) -> float:
    """Evaluates `checkpoint` (at `step`); returns the seconds it took.

    Skipped (one log line, 0 s) while another evaluator holds W/eval.
    """
    start = time.time()
    try:
      with self._watch.evaluator_lease(self.workdir, self.config) as holder:
        if not self.rebuilt and self.select:
          self._watch.rebuild_best(self.workdir, self.select,
                                   settings=self.settings,
                                   evaluate_fn=self._evaluate_fn,
                                   holder=holder)
        self.rebuilt = True
        # Read in place: the manager deletes a checkpoint only at a later
        # save.
        self._watch.evaluate_and_select(self.workdir, checkpoint, step,
                                        self._evaluate_fn, self.select,
                                        settings=self.settings, holder=holder)
    except lease.LeaseHeldError as e:
      logging.warning('In-process evaluation of step %d skipped (training '
                      'goes on): %s', step, str(e).split('\n')[0])
      return 0.0
    seconds = time.time() - start
    logging.info('In-process evaluation of step %d took %.1f s (kept out of '
                 'images/s and the ETA).', step, seconds)
    return seconds
