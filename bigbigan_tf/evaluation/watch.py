"""The sidecar evaluator: follows a run's checkpoints and keeps the best one.

`watch` polls W/checkpoints, evaluates each checkpoint not evaluated yet
(newest first when behind), writes the usual outputs through `evaluate_fn`
(evaluate_lib.evaluate: W/eval/results_step{N}.json, TensorBoard scalars and
grids at the checkpoint's step) and updates W/best/ by `best.update_best`
(docs/watching.md).

One evaluator per workdir: `watch` holds the reader lease W/eval/lease.json
(`evaluator_lease`, the trainer's machinery), as does the in-process
evaluation of train_lib; a second one is refused naming the holder.

A checkpoint is held as soon as it is seen: its files are hard-linked (copied
on gs://) into W/eval/held-{step}/, so the trainer's checkpoint manager
(train.keep_checkpoints) can delete it while the watcher is behind, and it is
still evaluated and can still become the best. At most `max_held` wait; when
more do, the oldest are let go (skipped, and the log says so).

Restart-safe: what is done is keyed on the checkpoint's identity
(`ledger.py`: step, .index size and mtime), so nothing is evaluated twice
and a re-saved step is evaluated again. At start the watcher rebuilds W/best
from every results_step{N}.json and removes an interrupted update's leftovers
(`best.rebuild`, `best.clean`). It ends when a readable checkpoint of the
run's final step has been evaluated and no older checkpoint is waiting, or
when no new checkpoint appears for `timeout_s`.
"""

import contextlib
import os
import time
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence
from typing import Tuple, Union

from absl import logging
import ml_collections
import tensorflow as tf

from bigbigan_tf import checkpoints
from bigbigan_tf import lease
from bigbigan_tf.evaluation import best
from bigbigan_tf.evaluation import ledger
from bigbigan_tf.evaluation import metric_plan

EVAL_DIR = ledger.EVAL_DIR
HELD_PREFIX = ledger.HELD_PREFIX
# Checkpoints waiting in W/eval/held-*, by default.
DEFAULT_MAX_HELD = 10
# evaluate_fn(path to read, checkpoint path the results name).
EvaluateFn = Callable[[str, str], Dict[str, Any]]
results_path = ledger.results_path
is_done = ledger.is_done


@contextlib.contextmanager
def evaluator_lease(workdir: str,
                    config: Optional[ml_collections.ConfigDict] = None
                    ) -> Iterator[lease.Holder]:
  """Holds W/eval's reader lease: one evaluator per workdir.

  Args:
    workdir: the run's workdir.
    config: the run's config (default: W/config.json): the lease mode is
      config.train.lease when the config has it, else 'auto', as the
      trainer's; its expiry config.train.lease_expiry_s.

  Raises:
    lease.LeaseHeldError: another evaluator (a watcher, or a trainer's
      in-process evaluation) holds it; the message names it.
  """
  config = config or checkpoints.load_config(workdir)
  train = config.get('train') or {}
  with lease.hold(os.path.join(workdir, EVAL_DIR), what='evaluator',
                  mode=train.get('lease', 'auto'),
                  expiry_s=float(train.get('lease_expiry_s', 300.0))) as held:
    yield held


def plan(config, metrics: Optional[Sequence[str]], select: str, *,
         inception: Optional[str] = None) -> Tuple[List[str], str]:
  """The metrics to compute and the metric choosing W/best/.

  Args:
    config: the run's config.
    metrics: metric names, or None / empty for the data's default.
    select: a metric of best.DIRECTIONS (or an alias), or 'auto': the first
      computed of best.AUTO_ORDER (fid, linear_probe, recon_accuracy,
      digit_fid, kid, is).
    inception: the Inception handle or path the evaluation will use: given,
      the metrics that cannot be computed here (Inception not loadable
      offline, digit metrics on other data) are dropped and named in one
      log line with what would enable them. None: no check.

  Returns:
    (metric names, selection metric).

  Raises:
    metric_plan.EvaluationError: an unknown metric, or a selection metric
      that is not computed.
  """
  names = (metric_plan.check_metrics(list(metrics)) if metrics
           else metric_plan.default_metrics(config))
  dropped = {}
  if inception is not None:
    _, _, dropped = metric_plan.unavailable(names, config, inception=inception,
                                            classifier_fn=None)
  if dropped:
    names = [m for m in names if m not in dropped]
    logging.warning(
        'The watcher drops the metrics it cannot compute here: %s (%s). To '
        'compute is/fid/kid offline, pass --inception=PATH to a local copy '
        'of TF-GAN\'s Inception SavedModel.', ', '.join(dropped),
        '; '.join(sorted({why.split('\n')[0].split('; ')[0]
                          for why in dropped.values()})))
  if not names:
    raise metric_plan.EvaluationError(
        f'None of the metrics can be computed here: {dropped}.')
  if select == 'auto':
    select = next((m for m in best.AUTO_ORDER if m in names), 'linear_probe')
  try:
    key = best.selection_key(select)
  except ValueError as e:
    raise metric_plan.EvaluationError(str(e)) from None
  metric = key.split('/')[0]
  if metric not in names:
    why = (f' ({dropped[metric]})' if metric in dropped else '')
    raise metric_plan.EvaluationError(
        f'The selection metric {select} needs {metric} among the computed '
        f'metrics{why}; have {",".join(names)}: add it, or select one of '
        'those.')
  return names, select


def evaluate_and_select(workdir: str, checkpoint: str, step: int,
                        evaluate_fn: EvaluateFn, select: Optional[str], *,
                        path: Optional[str] = None,
                        ident: Optional[ledger.Identity] = None
                        ) -> Optional[Dict[str, Any]]:
  """Evaluates one checkpoint, records it and updates W/best/.

  Args:
    workdir: the run's workdir.
    checkpoint: the checkpoint's path in W/checkpoints (the results name it).
    step: its step.
    evaluate_fn: evaluate_fn(path to read, checkpoint) writes the outputs.
    select: the selection metric of W/best/, or None.
    path: the files to read, when not `checkpoint` itself: the watcher's
      held copy, which the trainer's deletions cannot reach.
    ident: the checkpoint's identity (default: read from `checkpoint`).

  Returns:
    The result, or None if the checkpoint vanished or could not be read
    (nothing is recorded then).
  """
  path = path or checkpoint
  ident = ident or ledger.identity(checkpoint)
  if not tf.io.gfile.exists(path + '.index'):
    logging.warning('Checkpoint %s was deleted before its turn; skipped.',
                    checkpoint)
    return None
  start = time.time()
  try:
    result = evaluate_fn(path, checkpoint)
  except (FileNotFoundError, checkpoints.UnreadableCheckpointError) as e:
    logging.warning('Checkpoint %s could not be evaluated (deleted while it '
                    'was read, or a stub of a failed save?); skipped until '
                    'it is saved again: %s', checkpoint, e)
    return None
  logging.info('Evaluated step %d in %.1f s: %s', step, time.time() - start,
               result.get('metrics'))
  if not (result.get('metrics') or result.get('results_file')):
    return None
  # Results first, then the ledger, then W/best: a kill in between is
  # repaired at the next start (`rebuild_best`).
  ledger.record(workdir, step, ident, ledger.EVALUATED)
  if select and best.update_best(workdir, path, step,
                                 dict(result.get('metrics', {})), select):
    logging.info('Step %d is the new best by %s; copied to %s.', step,
                 select, best.best_checkpoint(workdir))
  return result


def rebuild_best(workdir: str, select: str) -> Optional[int]:
  """W/best from every results_step{N}.json whose checkpoint is still here.

  A result's checkpoint may be read from its held copy, from W/checkpoints
  (when that is the identity evaluated) or from what the previous layout's
  writer left; then the leftovers are removed (`best.clean`).
  """
  best.migrate_legacy(workdir)
  ckpt_dir = os.path.join(workdir, checkpoints.CHECKPOINT_DIR)
  holds = ledger.held(workdir)
  candidates = []
  for result in ledger.results(workdir):
    step = result['step']
    evaluated = (result['entry'] or {}).get('identity')
    sources = []
    if step in holds and evaluated in (None, holds[step][1]):
      sources.append(holds[step][0])
    original = os.path.join(ckpt_dir, f'ckpt-{step}')
    if evaluated in (None, ledger.identity(original)):
      sources.append(original)
    candidates.append(dict(result,
                           sources=sources + best.legacy_sources(workdir,
                                                                 step)))
  step = best.rebuild(workdir, select, candidates)
  best.clean(workdir)
  return step


def watch(workdir: str, evaluate_fn: EvaluateFn, *,
          final_step: Union[int, Callable[[], int]], select: Optional[str],
          timeout_s: float, poll_s: float = 5.0,
          max_held: int = DEFAULT_MAX_HELD,
          config: Optional[ml_collections.ConfigDict] = None) -> str:
  """Evaluates new checkpoints until the final step or a timeout.

  Args:
    workdir: the run's workdir (gs:// ok).
    evaluate_fn: evaluates a checkpoint prefix (its held copy) and writes
      its outputs naming the checkpoint: evaluate_fn(path, checkpoint).
    final_step: the run's num_train_steps, or a function reading it anew
      (a run resumed with more steps extends the watch); done once a
      readable checkpoint of that step is evaluated and no older one waits.
    select: selection metric for W/best/ (None: keep no best copy).
    timeout_s: give up after this long without a new checkpoint.
    poll_s: seconds between looks at W/checkpoints.
    max_held: at most this many checkpoints wait in W/eval/held-*; beyond,
      the oldest are let go and skipped.
    config: the run's config, for the lease (default: W/config.json).

  Returns:
    Why it ended: a one-line message.

  Raises:
    lease.LeaseHeldError: another evaluator holds W/eval's lease.
  """
  with evaluator_lease(workdir, config):
    if select:
      rebuild_best(workdir, select)
    return _loop(workdir, evaluate_fn, final_step=final_step, select=select,
                 timeout_s=timeout_s, poll_s=poll_s, max_held=max_held)


def _loop(workdir, evaluate_fn, *, final_step, select, timeout_s, poll_s,
          max_held) -> str:
  last_new = time.time()
  ckpt_dir = os.path.join(workdir, checkpoints.CHECKPOINT_DIR)
  while True:
    final = final_step() if callable(final_step) else final_step
    held = _hold_new(workdir, _held_not_done(workdir), max_held)
    if held:
      step = max(held)  # newest first
      prefix, ident = held[step]
      result = evaluate_and_select(
          workdir, os.path.join(ckpt_dir, f'ckpt-{step}'), step, evaluate_fn,
          select, path=prefix, ident=ident)
      if result is None:
        # Unreadable or wrote nothing: not again, unless saved again.
        ledger.record(workdir, step, ident, ledger.SKIPPED,
                      'gone, unreadable or nothing computed at its turn')
      ledger.release(workdir, step)
      last_new = time.time()
      continue
    if ledger.evaluated(workdir, final, ledger.identity(
        os.path.join(ckpt_dir, f'ckpt-{final}'))):
      return f'The final step {final} is evaluated; done.'
    if time.time() - last_new > timeout_s:
      return (f'No new checkpoint in {ckpt_dir} for {timeout_s:g} s '
              '(--timeout_s); stopping.')
    time.sleep(poll_s)


def _held_not_done(workdir: str) -> Dict[int, tuple]:
  """The complete holds still to evaluate; holds of done ones are released."""
  holds = ledger.held(workdir)
  for step, (_, ident) in list(holds.items()):
    if ledger.is_done(workdir, step, ident):
      ledger.release(workdir, step)
      del holds[step]
  return holds


def _pending(workdir: str) -> List[tuple]:
  """(step, prefix, identity) of checkpoints not done yet, newest first."""
  ckpt_dir = os.path.join(workdir, checkpoints.CHECKPOINT_DIR)
  found = []
  for path in checkpoints.checkpoint_paths(ckpt_dir):
    step = checkpoints._step_of(path)  # pylint: disable=protected-access
    ident = ledger.identity(path)
    if step >= 0 and ident is not None and not ledger.is_done(
        workdir, step, ident):
      found.append((step, path, ident))
  return found


def _hold_new(workdir: str, held: Dict[int, tuple],
              max_held: int) -> Dict[int, tuple]:
  """Holds the checkpoints not done or held yet; lets go beyond max_held."""
  for step, path, ident in _pending(workdir):
    if step in held and held[step][1] == ident:
      continue
    prefix = ledger.hold(workdir, path, step, ident)
    if prefix is None:
      logging.warning('Checkpoint %s was deleted before the watcher could '
                      'hold it (the trainer keeps train.keep_checkpoints); '
                      'skipped.', path)
      ledger.record(workdir, step, ident, ledger.SKIPPED, 'gone before held')
      held.pop(step, None)
    else:
      held[step] = (prefix, ident)
  for step in sorted(held)[:max(len(held) - max_held, 0)]:
    logging.warning('The watcher is more than --max_held=%d checkpoints '
                    'behind: step %d is let go and skipped.', max_held, step)
    ledger.record(workdir, step, held[step][1], ledger.SKIPPED,
                  'let go beyond --max_held')
    ledger.release(workdir, step)
    del held[step]
  return held
