"""The sidecar evaluator: follows a run's checkpoints and keeps the best one.

`watch` polls W/checkpoints, evaluates each checkpoint not evaluated yet
(newest first when behind), writes the usual outputs through `evaluate_fn`
(evaluate_lib.evaluate: W/eval/results_step{N}_{FP}.json, TensorBoard
scalars and grids at the checkpoint's step) and updates W/best/ by
`best.update_best` (docs/watching.md).

Like with like: FP is the fingerprint of the settings the figures depend on
(`settings.py`). The ledger and the selection are per fingerprint: a
watcher with other settings evaluates again, and W/best is compared only
with figures of its own settings. A kept best of other settings is
evaluated again under this watcher's settings at start (`rebuild_best`).

One evaluator per workdir: `watch` holds the reader lease W/eval/lease.json
(`evaluator_lease`, the trainer's machinery), as does the in-process
evaluation of train_lib; a second watcher is refused naming the holder (the
in-process evaluation skips that step instead: training never stops for
evaluation). A watcher that loses its lease writes nothing more: its
`Holder.check()` runs before results, held copies and W/best.

A checkpoint is held as soon as it is seen: its files are hard-linked (copied
on gs://) into W/eval/held-{step}/, so the trainer's checkpoint manager
(train.keep_checkpoints) can delete it while the watcher is behind, and it is
still evaluated and can still become the best. While a checkpoint is
evaluated a background thread keeps holding new ones, so one saved and
deleted meanwhile is not missed. At most `max_held` wait; when more do, the
oldest are let go (skipped, and the log says so).

Restart-safe: what is done is keyed on the checkpoint's identity
(`ledger.py`: step, .index size and mtime), so nothing is evaluated twice
and a re-saved step is evaluated again. At start the watcher rebuilds W/best
from every results_step{N}.json and removes an interrupted update's leftovers
(`best.rebuild`, `best.clean`). It ends complete when a readable
checkpoint of the run's final step has been evaluated and no older
checkpoint is waiting; incomplete when no new checkpoint appears for
`timeout_s`, or when training has stopped short of its final step (no live
trainer holds W's lease and no new checkpoint for `grace_s`).
"""

import contextlib
import os
import threading
import time
from typing import Any, Callable, Dict, Iterator, List, NamedTuple, Optional
from typing import Sequence, Tuple, Union

from absl import logging
import ml_collections
import tensorflow as tf

from bigbigan_tf import checkpoints
from bigbigan_tf import lease
from bigbigan_tf.evaluation import best
from bigbigan_tf.evaluation import ledger
from bigbigan_tf.evaluation import metric_plan
from bigbigan_tf.evaluation import settings as settings_lib

EVAL_DIR = ledger.EVAL_DIR
HELD_PREFIX = ledger.HELD_PREFIX
# Checkpoints waiting in W/eval/held-*, by default.
DEFAULT_MAX_HELD = 10
# Seconds without a live trainer and without a new checkpoint after which
# training counts as stopped short of its final step (time to restart it).
DEFAULT_GRACE_S = 300.0
# evaluate_fn(path to read, checkpoint path the results name,
# before_write=callable run before any output is written).
EvaluateFn = Callable[..., Dict[str, Any]]
results_path = ledger.results_path
is_done = ledger.is_done



class Outcome(NamedTuple):
  """How a watch ended: complete (the final step evaluated) or not, why."""
  complete: bool
  message: str


@contextlib.contextmanager
def evaluator_lease(workdir: str,
                    config: Optional[ml_collections.ConfigDict] = None,
                    on_lost: Optional[Callable[[lease.LeaseLostError],
                                               None]] = None
                    ) -> Iterator[lease.Holder]:
  """Holds W/eval's reader lease: one evaluator per workdir.

  Args:
    workdir: the run's workdir.
    config: the run's config (default: W/config.json): the lease mode is
      config.train.lease when the config has it, else 'auto', as the
      trainer's; its expiry config.train.lease_expiry_s.
    on_lost: called once when the lease is found lost (e.g. print a line
      and exit); `Holder.check()` raises either way.

  Raises:
    lease.LeaseHeldError: another evaluator (a watcher, or a trainer's
      in-process evaluation) holds it; the message names it.
  """
  mode, expiry_s = _lease_settings(workdir, config)
  with lease.hold(os.path.join(workdir, EVAL_DIR), what='evaluator',
                  mode=mode, expiry_s=expiry_s, on_lost=on_lost) as held:
    yield held


def _lease_settings(workdir: str, config) -> Tuple[str, float]:
  config = config or checkpoints.load_config(workdir)
  train = config.get('train') or {}
  return (train.get('lease', 'auto'),
          float(train.get('lease_expiry_s', 300.0)))


def trainer_alive(workdir: str, config=None) -> bool:
  """Whether a live trainer holds W's lease (`lease.holder_of`)."""
  mode, expiry_s = _lease_settings(workdir, config)
  try:
    return lease.holder_of(workdir, mode=mode, expiry_s=expiry_s) is not None
  except (lease.LeaseError, OSError, tf.errors.OpError) as e:
    # Cannot tell: never conclude that training died from a failed look.
    logging.warning('Could not tell whether training is running: %s', e)
    return True


def plan(config, metrics: Optional[Sequence[str]], select: str, *,
         inception: Optional[str] = None
         ) -> Tuple[List[str], str, Optional[str]]:
  """The metrics to compute, the metric choosing W/best/, the Inception source.

  Args:
    config: the run's config.
    metrics: metric names, or None / empty for the data's default.
    select: a metric of best.DIRECTIONS (or an alias), or 'auto': the first
      computed of best.AUTO_ORDER (fid, linear_probe, recon_accuracy,
      digit_fid, kid, is).
    inception: the Inception handle or path the evaluation will use: given,
      the metrics that cannot be computed here (Inception not loadable
      offline, digit metrics on other data, the probe without labels) are
      dropped and named in one log line with what would enable them. None:
      no check.

  Returns:
    (metric names, selection metric, the Inception source the figures
    depend on: `inception` when a planned metric uses the loaded network,
    else None; part of the settings, `settings.comparable`).

  Raises:
    metric_plan.EvaluationError: an unknown metric, nothing that can be
      computed or selected by, or a selection metric that is not computed.
  """
  names = (metric_plan.check_metrics(list(metrics)) if metrics
           else metric_plan.default_metrics(config))
  dropped, loaded = {}, None
  if inception is not None:
    loaded, _, dropped = metric_plan.unavailable(
        names, config, inception=inception, classifier_fn=None)
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
    select = next((m for m in best.AUTO_ORDER if m in names), None)
    if select is None:
      raise metric_plan.EvaluationError(
          f'Nothing to select the best checkpoint by: none of '
          f'{", ".join(best.AUTO_ORDER)} can be computed here (computed: '
          f'{", ".join(names)}; dropped: {", ".join(dropped) or "none"}). '
          'Pass --inception=PATH for fid, or use labelled data for '
          'linear_probe.')
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
  if inception is None:
    source = None
  else:
    from bigbigan_tf.evaluation import evaluate_lib  # pylint: disable=g-import-not-at-top
    source = evaluate_lib.inception_source_of(names, loaded, inception)
  return names, select, source


def _check(holder: Optional[lease.Holder]) -> None:
  if holder is not None:
    holder.check()


def _verify(holder: Optional[lease.Holder]) -> None:
  """The strongest check the lease has, before W/best moves."""
  if holder is not None:
    getattr(holder, 'verify', holder.check)()


def evaluate_and_select(workdir: str, checkpoint: str, step: int,
                        evaluate_fn: EvaluateFn, select: Optional[str], *,
                        settings: Optional[Dict[str, Any]] = None,
                        path: Optional[str] = None,
                        ident: Optional[ledger.Identity] = None,
                        holder: Optional[lease.Holder] = None
                        ) -> Optional[Dict[str, Any]]:
  """Evaluates one checkpoint, records it and updates W/best/.

  Args:
    workdir: the run's workdir.
    checkpoint: the checkpoint's path in W/checkpoints (the results name it).
    step: its step.
    evaluate_fn: evaluate_fn(path to read, checkpoint, before_write=...)
      writes the outputs.
    select: the selection metric of W/best/, or None.
    settings: the settings the evaluation uses (`settings.comparable`;
      None: unknown, the un-keyed files); its fingerprint keys the ledger
      and the selection.
    path: the files to read, when not `checkpoint` itself: the watcher's
      held copy, which the trainer's deletions cannot reach.
    ident: the checkpoint's identity (default: read from `checkpoint`).
    holder: the evaluator's lease, checked before each write.

  Returns:
    The result, or None if the checkpoint vanished or could not be read,
    or its figures came out under other settings (nothing is recorded then).
  """
  fp = settings_lib.fingerprint(settings)
  path = path or checkpoint
  ident = ident or ledger.identity(checkpoint)
  if not tf.io.gfile.exists(path + '.index'):
    logging.warning('Checkpoint %s was deleted before its turn; skipped.',
                    checkpoint)
    return None
  start = time.time()
  try:
    result = evaluate_fn(path, checkpoint,
                         before_write=lambda: _check(holder))
  except (FileNotFoundError, checkpoints.UnreadableCheckpointError) as e:
    logging.warning('Checkpoint %s could not be evaluated (deleted while it '
                    'was read, or a stub of a failed save?); skipped until '
                    'it is saved again: %s', checkpoint, e)
    return None
  logging.info('Evaluated step %d in %.1f s: %s', step, time.time() - start,
               result.get('metrics'))
  if not (result.get('metrics') or result.get('results_file')):
    return None
  if result.get('fingerprint', fp) != fp:
    # E.g. Inception loaded at start but not now: other figures, kept in
    # their own file, never compared with this watcher's.
    logging.warning('Step %d came out under other settings (%s) than this '
                    'evaluator\'s (%s); not compared.', step,
                    result.get('fingerprint'), fp)
    return None
  # Results first, then the ledger, then W/best: a kill in between is
  # repaired at the next start (`rebuild_best`).
  _check(holder)
  ledger.record(workdir, step, ident, ledger.EVALUATED, fp=fp)
  if select and best.update_best(workdir, path, step,
                                 dict(result.get('metrics', {})), select,
                                 settings, check=lambda: _verify(holder)):
    logging.info('Step %d is the new best by %s; copied to %s.', step,
                 select, best.best_checkpoint(workdir))
  return result


def rebuild_best(workdir: str, select: str, *,
                 settings: Optional[Dict[str, Any]] = None,
                 evaluate_fn: Optional[EvaluateFn] = None,
                 holder: Optional[lease.Holder] = None) -> Optional[int]:
  """W/best from every result of these settings whose checkpoint is here.

  A result's checkpoint may be read from its held copy, from W/checkpoints
  (when that is the identity evaluated) or from what the previous layout's
  writer left; then the leftovers are removed (`best.clean`). A best kept
  under other settings (or by another metric) is said in one line and, with
  `evaluate_fn`, evaluated again under `settings` first
  (`_reevaluate_kept`): figures of two settings are never compared.
  """
  _verify(holder)
  best.migrate_legacy(workdir)
  best.adopt_legacy_leftovers(workdir)
  fp = settings_lib.fingerprint(settings)
  kept = best.read_best(workdir)
  if kept is not None and not best.same_selection(
      kept, best.selection_key(select), fp):
    _reevaluate_kept(workdir, kept, select, settings, evaluate_fn, holder)
  ckpt_dir = os.path.join(workdir, checkpoints.CHECKPOINT_DIR)
  holds = ledger.held(workdir)
  kept = best.read_best(workdir)
  candidates = []
  for result in ledger.results(workdir, fp):
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
  step = best.rebuild(workdir, select, candidates, settings)
  best.clean(workdir)
  return step


def _reevaluate_kept(workdir, kept, select, settings, evaluate_fn,
                     holder) -> None:
  """The kept best of other settings, evaluated again under `settings`."""
  fp, key = settings_lib.fingerprint(settings), best.selection_key(select)
  logging.warning(
      'W/best holds step %d chosen by %s under other settings or another '
      'metric (%s; fingerprint %s); this evaluator selects by %s under %s '
      '(fingerprint %s): %s', kept['step'], kept.get('metric'),
      settings_lib.describe(kept.get('settings')), kept.get('fingerprint'),
      key, settings_lib.describe(settings), fp,
      'the kept best is evaluated again under these settings before any '
      'comparison.' if evaluate_fn and not kept.get('legacy') else
      'a new selection starts.')
  if evaluate_fn is None or kept.get('legacy'):
    return
  copy = best.best_checkpoint(workdir)
  step = kept['step']
  ident = ledger.identity(copy)
  checkpoint = os.path.join(workdir, checkpoints.CHECKPOINT_DIR,
                            f'ckpt-{step}')
  metrics = None
  found = ledger.entry(workdir, step, fp)
  # A result of the kept step under these settings (e.g. a one-off
  # evaluate.py --checkpoint=best, identity unknown) is used as it is.
  if found is not None and found.get('status') == ledger.EVALUATED and (
      found.get('identity') in (None, ident)):
    metrics = next((r['metrics'] for r in ledger.results(workdir, fp)
                    if r['step'] == step), None)
  if metrics is None:
    result = evaluate_and_select(workdir, checkpoint, step, evaluate_fn,
                                 None, settings=settings, path=copy,
                                 ident=ident, holder=holder)
    metrics = (result or {}).get('metrics')
  if metrics is None or key not in metrics:
    logging.warning('The kept best (step %d) has no %s under these settings: '
                    'a new selection starts.', step, key)
    return
  _verify(holder)
  best.restamp(workdir, key, metrics, settings)


class _HoldMeanwhile:
  """While one checkpoint is evaluated, keeps holding new ones (a thread).

  The trainer may save and delete a checkpoint within one long evaluation
  (train.keep_checkpoints): held as soon as it appears, it is not missed.
  Only holds are made here; the main loop does everything else.
  """

  def __init__(self, workdir: str, held: Dict[int, tuple], poll_s: float,
               fp, holder):
    self.workdir, self.poll_s, self.fp, self.holder = (workdir, poll_s, fp,
                                                       holder)
    # Steps held already (the one evaluated among them) are left to the
    # main loop, even when saved again: their files are being read.
    self.busy = set(held)
    self.seen = set()
    self.stop = threading.Event()
    self.thread = threading.Thread(target=self._run, daemon=True,
                                   name='hold-new-checkpoints')

  def __enter__(self):
    self.thread.start()
    return self

  def __exit__(self, *unused):
    self.stop.set()
    self.thread.join()

  def _run(self):
    while not self.stop.wait(self.poll_s):
      try:
        for step, path, ident in _pending(self.workdir, self.fp):
          if step in self.busy or (step, _key(ident)) in self.seen:
            continue
          _check(self.holder)
          if ledger.hold(self.workdir, path, step, ident) is not None:
            logging.info('Held checkpoint %s while another was evaluated.',
                         path)
          self.seen.add((step, _key(ident)))
      except Exception as e:  # pylint: disable=broad-except
        # The main loop looks again after the evaluation; a failed look
        # here only loses the head start.
        logging.warning('Holding new checkpoints meanwhile failed: %s', e)


def _key(ident):
  return tuple(sorted((ident or {}).items()))


def watch(workdir: str, evaluate_fn: EvaluateFn, *,
          final_step: Union[int, Callable[[], int]], select: Optional[str],
          timeout_s: float, poll_s: float = 5.0,
          max_held: int = DEFAULT_MAX_HELD,
          config: Optional[ml_collections.ConfigDict] = None,
          settings: Optional[Dict[str, Any]] = None,
          grace_s: float = DEFAULT_GRACE_S,
          on_lost: Optional[Callable[[lease.LeaseLostError], None]] = None,
          alive: Optional[Callable[[], bool]] = None) -> Outcome:
  """Evaluates new checkpoints until the final step, a timeout or the end.

  Args:
    workdir: the run's workdir (gs:// ok).
    evaluate_fn: evaluates a checkpoint prefix (its held copy) and writes
      its outputs naming the checkpoint: evaluate_fn(path, checkpoint,
      before_write=...), calling before_write() before it writes.
    final_step: the run's num_train_steps, or a function reading it anew
      (a run resumed with more steps extends the watch); done once a
      readable checkpoint of that step is evaluated and no older one waits.
    select: selection metric for W/best/ (None: keep no best copy).
    timeout_s: give up after this long without a new checkpoint.
    poll_s: seconds between looks at W/checkpoints.
    max_held: at most this many checkpoints wait in W/eval/held-*; beyond,
      the oldest are let go and skipped.
    config: the run's config, for the leases (default: W/config.json).
    settings: the settings evaluate_fn evaluates with
      (`settings.comparable`; None: unknown); they key the ledger and the
      selection.
    grace_s: training counts as stopped short of its final step once no
      live trainer holds W's lease and no new checkpoint came for this long
      (after training was seen: a checkpoint or a live trainer).
    on_lost: called when the evaluator's lease is lost (e.g. exit).
    alive: whether training runs (default: `trainer_alive`).

  Returns:
    Outcome(complete, one-line message naming what was evaluated and what
    was not).

  Raises:
    lease.LeaseHeldError: another evaluator holds W/eval's lease.
  """
  alive = alive or (lambda: trainer_alive(workdir, config))
  with evaluator_lease(workdir, config, on_lost) as holder:
    if select:
      rebuild_best(workdir, select, settings=settings,
                   evaluate_fn=evaluate_fn, holder=holder)
    return _loop(workdir, evaluate_fn, final_step=final_step, select=select,
                 timeout_s=timeout_s, poll_s=poll_s, max_held=max_held,
                 settings=settings, grace_s=grace_s, alive=alive,
                 holder=holder)


def _loop(workdir, evaluate_fn, *, final_step, select, timeout_s, poll_s,
          max_held, settings, grace_s, alive, holder) -> Outcome:
  fp = settings_lib.fingerprint(settings)
  last_new = time.time()
  ckpt_dir = os.path.join(workdir, checkpoints.CHECKPOINT_DIR)
  started, skipped = False, {}
  while True:
    final = final_step() if callable(final_step) else final_step
    held = _hold_new(workdir, _held_not_done(workdir, fp), max_held, fp,
                     holder, skipped)
    if held:
      started = True
      step = max(held)  # newest first
      prefix, ident = held[step]
      with _HoldMeanwhile(workdir, held, poll_s, fp, holder):
        result = evaluate_and_select(
            workdir, os.path.join(ckpt_dir, f'ckpt-{step}'), step,
            evaluate_fn, select, settings=settings, path=prefix, ident=ident,
            holder=holder)
      if result is None:
        # Unreadable or wrote nothing: not again, unless saved again.
        why = 'gone, unreadable or nothing computed at its turn'
        ledger.record(workdir, step, ident, ledger.SKIPPED, why, fp=fp)
        skipped[step] = why
      ledger.release(workdir, step)
      last_new = time.time()
      continue
    if ledger.evaluated(workdir, final, ledger.identity(
        os.path.join(ckpt_dir, f'ckpt-{final}')), fp):
      return Outcome(True, f'The final step {final} is evaluated; done. '
                     + _summary(workdir, fp, final, skipped))
    running = alive()
    started = started or running or bool(
        checkpoints.checkpoint_paths(ckpt_dir))
    quiet = time.time() - last_new
    if started and not running and quiet > grace_s:
      return Outcome(False, (
          f'Training is not running (no live trainer holds {workdir}) and '
          f'no new checkpoint came for {grace_s:g} s (--grace_s): it died '
          f'or stopped before its final step {final}. ')
                     + _summary(workdir, fp, final, skipped))
    if quiet > timeout_s:
      return Outcome(False, (
          f'No new checkpoint in {ckpt_dir} for {timeout_s:g} s '
          f'(--timeout_s){"" if started else "; training never started"}; '
          'stopping. ') + _summary(workdir, fp, final, skipped))
    time.sleep(poll_s)


def _summary(workdir: str, fp, final: int, skipped: Dict[int, str]) -> str:
  """What was evaluated under these settings and what was not."""
  steps = sorted(r['step'] for r in ledger.results(workdir, fp))
  text = (f'Evaluated (settings {fp or "unknown"}): steps '
          f'{", ".join(map(str, steps))}.' if steps else
          f'Nothing evaluated (settings {fp or "unknown"}).')
  if skipped:
    text += ' Skipped: ' + '; '.join(f'step {s} ({why})'
                                     for s, why in sorted(skipped.items()))
    text += '.'
  if final not in steps:
    text += f' Not evaluated: the final step {final}.'
  return text


def _held_not_done(workdir: str, fp) -> Dict[int, tuple]:
  """The complete holds still to evaluate; holds of done ones are released."""
  holds = ledger.held(workdir)
  for step, (_, ident) in list(holds.items()):
    if ledger.is_done(workdir, step, ident, fp):
      ledger.release(workdir, step)
      del holds[step]
  return holds


def _pending(workdir: str, fp) -> List[tuple]:
  """(step, prefix, identity) of checkpoints not done yet, newest first."""
  ckpt_dir = os.path.join(workdir, checkpoints.CHECKPOINT_DIR)
  found = []
  for path in checkpoints.checkpoint_paths(ckpt_dir):
    step = checkpoints._step_of(path)  # pylint: disable=protected-access
    ident = ledger.identity(path)
    if step >= 0 and ident is not None and not ledger.is_done(
        workdir, step, ident, fp):
      found.append((step, path, ident))
  return found


def _hold_new(workdir: str, held: Dict[int, tuple], max_held: int, fp,
              holder, skipped: Dict[int, str]) -> Dict[int, tuple]:
  """Holds the checkpoints not done or held yet; lets go beyond max_held."""
  for step, path, ident in _pending(workdir, fp):
    if step in held and held[step][1] == ident:
      continue
    _check(holder)
    prefix = ledger.hold(workdir, path, step, ident)
    if prefix is None:
      logging.warning('Checkpoint %s was deleted before the watcher could '
                      'hold it (the trainer keeps train.keep_checkpoints); '
                      'skipped.', path)
      ledger.record(workdir, step, ident, ledger.SKIPPED, 'gone before held',
                    fp=fp)
      skipped[step] = 'gone before held'
      held.pop(step, None)
    else:
      held[step] = (prefix, ident)
  for step in sorted(held)[:max(len(held) - max_held, 0)]:
    logging.warning('The watcher is more than --max_held=%d checkpoints '
                    'behind: step %d is let go and skipped.', max_held, step)
    ledger.record(workdir, step, held[step][1], ledger.SKIPPED,
                  'let go beyond --max_held', fp=fp)
    skipped[step] = 'let go beyond --max_held'
    ledger.release(workdir, step)
    del held[step]
  return held
