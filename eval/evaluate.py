r"""Evaluates a training run: python eval/evaluate.py --workdir=W [flags].

  python eval/evaluate.py --workdir=W [--module=EXPORT_DIR] \
      [--metrics=is,fid,kid,linear_probe,grids,digit_fid,recon_accuracy,prdc] \
      [--num_samples=50000] [--inception=HANDLE_OR_PATH] [--batch_size=100] \
      [--checkpoint=W/checkpoints/ckpt-STEP] [--feature=avepool_feat]

By default G and E are the EMA networks of W's latest checkpoint; with
--module, an exported SavedModel (export.py, or a BigBiGAN TF Hub module).
Results: W/eval/results_step{STEP}_{FP}.json (FP: a fingerprint of the
settings the figures depend on; results_latest.json: the newest step's),
TensorBoard summaries and PNG grids under W/eval/. See
bigbigan_tf/evaluation/evaluate_lib.py, and docs/watching.md for --watch.

Exit status: 0 when every requested metric was computed (--watch: when the
run's final step was evaluated); 2 when some could not be (e.g. no Inception
weights offline: pass --inception=PATH; the others are still computed and
written, the failures listed under "errors"), the arguments are wrong
(unknown metric, no workdir / checkpoint, bad module), on any other error
(one line, no traceback), or when --watch ends without the final step (a
timeout, training that stopped short, a workdir that never appeared).
"""

import json
import os
import sys
import time

from absl import app
from absl import flags
from absl import logging

from bigbigan_tf import defaults

_WORKDIR = flags.DEFINE_string(
    'workdir', None, 'The workdir train.py wrote to (gs:// ok); results go to '
    'WORKDIR/eval/. With --module it may be new: the config then comes from '
    'the module.')
_MODULE = flags.DEFINE_string(
    'module', None, 'Evaluate this exported SavedModel (export.py, or a '
    'BigBiGAN TF Hub module) instead of the workdir\'s checkpoint.')
_METRICS = flags.DEFINE_string(
    'metrics', 'auto', 'Comma-separated metrics from '
    f'{", ".join(defaults.METRICS)}; auto = '
    f'{",".join(defaults.GENERATIVE_METRICS)},linear_probe,grids plus '
    f'{",".join(defaults.DIGIT_METRICS)} on digit data.')
_NUM_SAMPLES = flags.DEFINE_integer(
    'num_samples', defaults.NUM_SAMPLES,
    'Generated images for IS/FID/KID/digit_fid (50K as '
    'in the paper); also the cap on real eval images. With --watch the '
    'default is the run\'s config.eval.num_samples (1,000 offline).',
    lower_bound=2)
_INCEPTION = flags.DEFINE_string(
    'inception', defaults.INCEPTION_HANDLE,
    'TF Hub handle or local / gs:// path of '
    'TF-GAN\'s Inception SavedModel (needed for is/fid/kid; offline, pass a '
    'local copy).')
_BATCH_SIZE = flags.DEFINE_integer('batch_size', defaults.EVAL_BATCH_SIZE,
                                   'Images per forward pass.', lower_bound=1)
_CHECKPOINT = flags.DEFINE_string(
    'checkpoint', None, 'Checkpoint to evaluate, e.g. W/checkpoints/ckpt-500 '
    '(default: the latest in --workdir); best = the kept best checkpoint '
    '(W/best/, from --watch or config.eval).')
_FEATURE = flags.DEFINE_enum(
    'feature', defaults.PROBE_FEATURE, list(defaults.FEATURES),
    'Frozen encoder output for the linear probe.')
_SEED = flags.DEFINE_integer(
    'seed', 0, 'Seed of the latents, the probe\'s train_val split and the '
    'digit classifier.')
_PROBE_EPOCHS = flags.DEFINE_integer(
    'probe_epochs', defaults.PROBE_EPOCHS,
    'Maximum linear-probe epochs per learning rate '
    '(early stopping on train_val).', lower_bound=1)
_DIGIT_CLASSIFIER_EPOCHS = flags.DEFINE_integer(
    'digit_classifier_epochs', defaults.DIGIT_CLASSIFIER_EPOCHS,
    'Epochs when the digit classifier has to '
    'be trained (it is cached in WORKDIR/eval/).', lower_bound=1)
_PRDC_K = flags.DEFINE_integer(
    'prdc_k', defaults.PRDC_K,
    'k of the k-nearest-neighbour balls of prdc (precision, '
    'recall, density, coverage).', lower_bound=1)
_STANDING_STATS_BATCHES = flags.DEFINE_integer(
    'standing_stats_batches', defaults.STANDING_STATS_BATCHES,
    'For a checkpoint: batches of BigGAN '
    'standing statistics for the EMA networks\' batch norms, as export.py '
    'computes them; 0 keeps the moving statistics of the live networks.',
    lower_bound=0)
_WATCH = flags.DEFINE_bool(
    'watch', False, 'Follow the run: evaluate each new checkpoint of '
    'WORKDIR/checkpoints (newest first when behind, none twice, also after a '
    'restart, again when a step is saved again) and keep the best in '
    'WORKDIR/best/ (docs/watching.md); one watcher per workdir (a second is '
    'refused, exit 2); exits 0 once a readable checkpoint of the final step '
    '(config.num_train_steps) and every checkpoint it holds are evaluated, '
    'exit 2 with one line after --timeout_s without a new checkpoint, or '
    'when training stopped short of it (--grace_s). It may start before the '
    'run: it waits up to --timeout_s for WORKDIR/config.json. Metrics that '
    'cannot be computed here are named in the log and dropped. Results are '
    'keyed by their settings, and W/best compares only results of one '
    'settings.')
_SELECT = flags.DEFINE_string(
    'select', 'auto', 'With --watch: metric choosing WORKDIR/best/ (fid, kid, '
    'digit_fid: lower is better; is, recon_accuracy, linear_probe: higher); '
    'auto = the first that can be computed here of fid, linear_probe, '
    'recon_accuracy, digit_fid, kid, is (offline, without --inception: '
    'linear_probe).')
_TIMEOUT_S = flags.DEFINE_float(
    'timeout_s', 3600.0, 'With --watch: stop after this many seconds '
    'without a new checkpoint.', lower_bound=0)
_GRACE_S = flags.DEFINE_float(
    'grace_s', 300.0, 'With --watch: once training has run, exit 2 when no '
    'live trainer holds WORKDIR\'s lease and no new checkpoint came for this '
    'long before the final step (time enough to restart a trainer).',
    lower_bound=0)
_MAX_HELD = flags.DEFINE_integer(
    'max_held', 10, 'With --watch: each checkpoint is held (hard-linked, '
    'copied on gs://) in WORKDIR/eval/held-STEP/ as soon as it is seen, so '
    'the trainer\'s keep_checkpoints cannot delete it before its turn; at '
    'most this many wait, beyond that the oldest are skipped.', lower_bound=1)
_THREADS = flags.DEFINE_integer(
    'threads', 0, 'TensorFlow intra- and inter-op threads (0 = TF default); '
    'with --watch default 1, to leave the cores to the trainer.',
    lower_bound=0)
_NICE = flags.DEFINE_integer(
    'nice', 10, 'With --watch: lower the process priority by this much '
    '(os.nice) so the trainer goes first.', lower_bound=0)


def _wait_for_config(workdir) -> bool:
  """A run not started yet: wait for W/config.json up to --timeout_s.

  The workdir itself may not exist yet, so both terminals of the README's
  recipe can start in any order. Returns whether config.json is there.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from bigbigan_tf import config_lib  # pylint: disable=g-import-not-at-top
  path = os.path.join(workdir, config_lib.CONFIG_FILENAME)
  if tf.io.gfile.exists(path):
    return True
  logging.info('Waiting for the trainer to write %s ...', path)
  deadline = time.time() + _TIMEOUT_S.value
  while not tf.io.gfile.exists(path):
    if time.time() >= deadline:
      return False
    time.sleep(min(2.0, max(deadline - time.time(), 0.0)))
  return True


def _exit_on_lost(error):
  """The evaluator's lease was lost (stalled past its expiry): stop now."""
  print(f'error: the watcher lost its lease on W/eval and stops writing: '
        f'{str(error).splitlines()[0]}', file=sys.stderr, flush=True)
  os._exit(2)  # pylint: disable=protected-access


def _watch(evaluate_kwargs, metrics):
  """--watch: the sidecar loop (bigbigan_tf/evaluation/watch.py)."""
  # pylint: disable=g-import-not-at-top
  from bigbigan_tf import checkpoints
  from bigbigan_tf.evaluation import evaluate_lib
  from bigbigan_tf.evaluation import watch
  from bigbigan_tf.evaluation import settings as settings_lib
  # pylint: enable=g-import-not-at-top
  workdir = _WORKDIR.value
  checkpoints.check_workdir_is_directory(workdir)
  if not _wait_for_config(workdir):
    print(f'error: {workdir}/config.json did not appear within '
          f'--timeout_s={_TIMEOUT_S.value:g} s (no run started there); '
          'nothing evaluated.', file=sys.stderr)
    sys.exit(2)
  config = checkpoints.load_config(workdir)
  with watch.evaluator_lease(workdir, config):
    pass  # a second watcher is refused now, before Inception is loaded
  if not _NUM_SAMPLES.present:
    # The run's own evaluation size (1,000 for the offline default), not the
    # paper's 50,000: a minute per checkpoint instead of two.
    evaluate_kwargs = dict(evaluate_kwargs,
                           num_samples=int(config.eval.num_samples))
  logging.info('Watching with num_samples=%d%s.',
               evaluate_kwargs['num_samples'],
               '' if _NUM_SAMPLES.present else ' (config.eval.num_samples)')
  names, select, inception_source = watch.plan(
      config, metrics.split(',') if metrics else None, _SELECT.value,
      inception=_INCEPTION.value)
  settings = settings_lib.comparable(
      config, metrics=names, inception_source=inception_source,
      **{k: evaluate_kwargs[k] for k in settings_lib.ARGUMENTS})
  logging.info('Settings %s: %s.', settings_lib.fingerprint(settings),
               settings_lib.describe(settings))

  def evaluate_fn(path, checkpoint, before_write=None):
    return evaluate_lib.evaluate(workdir, metrics=names, checkpoint=path,
                                 reported_checkpoint=checkpoint,
                                 before_write=before_write, **evaluate_kwargs)

  outcome = watch.watch(workdir, evaluate_fn,
                        final_step=lambda: int(
                            checkpoints.load_config(workdir).num_train_steps),
                        select=select, timeout_s=_TIMEOUT_S.value,
                        max_held=_MAX_HELD.value, config=config,
                        settings=settings, grace_s=_GRACE_S.value,
                        on_lost=_exit_on_lost)
  if not outcome.complete:
    print(f'error: {outcome.message}', file=sys.stderr)
    sys.exit(2)
  print(outcome.message)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  # Imported here so --help answers without loading TensorFlow.
  from bigbigan_tf import checkpoints  # pylint: disable=g-import-not-at-top
  from bigbigan_tf import config_lib  # pylint: disable=g-import-not-at-top
  from bigbigan_tf import data as data_lib  # pylint: disable=g-import-not-at-top
  from bigbigan_tf import hardware  # pylint: disable=g-import-not-at-top
  from bigbigan_tf import lease  # pylint: disable=g-import-not-at-top
  from bigbigan_tf import tfgan_compat  # pylint: disable=g-import-not-at-top
  from bigbigan_tf import write_faults  # pylint: disable=g-import-not-at-top
  from bigbigan_tf.evaluation import best  # pylint: disable=g-import-not-at-top
  from bigbigan_tf.evaluation import evaluate_lib  # pylint: disable=g-import-not-at-top
  from bigbigan_tf.evaluation import features  # pylint: disable=g-import-not-at-top
  from tensorflow import errors as tf_errors  # pylint: disable=g-import-not-at-top

  if _WATCH.value and (_CHECKPOINT.value or _MODULE.value):
    print('error: --watch follows the run\'s own checkpoints; drop '
          f'--checkpoint={_CHECKPOINT.value} / --module={_MODULE.value}, or '
          'drop --watch to evaluate that one.', file=sys.stderr)
    sys.exit(2)
  metrics = None if _METRICS.value == 'auto' else _METRICS.value
  threads = _THREADS.value or (1 if _WATCH.value else 0)
  if threads:
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
  if _WATCH.value and _NICE.value:
    os.nice(_NICE.value)
  evaluate_kwargs = dict(
      num_samples=_NUM_SAMPLES.value,
      batch_size=_BATCH_SIZE.value, feature=_FEATURE.value,
      inception=_INCEPTION.value, seed=_SEED.value,
      probe_epochs=_PROBE_EPOCHS.value,
      digit_classifier_epochs=_DIGIT_CLASSIFIER_EPOCHS.value,
      prdc_k=_PRDC_K.value,
      standing_stats_batches=_STANDING_STATS_BATCHES.value)
  try:
    if _WATCH.value:
      _watch(evaluate_kwargs, metrics)
      return
    result = evaluate_lib.evaluate(
        _WORKDIR.value, metrics=metrics, module=_MODULE.value,
        checkpoint=checkpoints.resolve_checkpoint(_WORKDIR.value,
                                                  _CHECKPOINT.value),
        **evaluate_kwargs)
  except (evaluate_lib.EvaluationError, features.ModuleLoadError,
          FileNotFoundError, config_lib.ConfigError,
          data_lib.DataError, checkpoints.UnreadableCheckpointError,
          checkpoints.WorkdirError, checkpoints.IncompleteCheckpointError,
          hardware.HardwareError, best.SelectError, lease.LeaseError,
          write_faults.WriteFailed, tfgan_compat.MissingDependencyError,
          OSError, tf_errors.OpError) as e:
    # One line: the first of the message (TensorFlow's can run to pages).
    line = str(e).strip().split('\n')[0] or type(e).__name__
    logging.error('%s: %s', type(e).__name__, line)
    print(f'error: {line}', file=sys.stderr)
    sys.exit(2)
  if result['metrics']:
    print(json.dumps(result['metrics'], indent=2, sort_keys=True))
  if result['results_file']:
    print(f'Results: {result["results_file"]}')
  for name, message in result['errors'].items():
    print(f'error: {name}: {message}', file=sys.stderr)
  if result['errors']:
    sys.exit(2)


if __name__ == '__main__':
  flags.mark_flags_as_required(['workdir'])
  app.run(main)
