"""Trains BigBiGAN: python train.py --workdir=W [--config=...] [--config.x=v].

With no --config it trains the offline default (bigbigan_tf/configs/mnist.py,
5,000 real MNIST digits). Re-running the same command resumes from the latest
checkpoint in W (the newest readable one: an unreadable newer checkpoint is
skipped with a warning). Strategy: --strategy=auto|cpu|gpu|tpu|multi_worker;
with multi_worker, start the same command on every worker with its TF_CONFIG
and a --workdir all of them see (gs:// or a shared file system): the chief
writes config, checkpoints, summaries and grids, the others only take part.

One trainer per workdir: the run (the chief, under multi-worker) holds the
workdir's lease until it ends (bigbigan_tf/lease.py, --config.train.lease: an
OS lock on local paths, a compare-and-swap on gs://; its first lines say
which); a second trainer on a busy workdir is refused before it writes
anything, and a holder that loses its lease (stalled past its expiry) starts
no new write and exits.

Exit status: 0 done; 2 bad input (config file, --config.FIELD, workdir, data,
unreadable checkpoints), a workdir in use by another run, a lost lease, or a
failed write (full disk, quota, permissions: the last good checkpoint is
kept), reported in one line; 128 + signal when stopped by SIGTERM / SIGINT
(in the loop after saving a checkpoint; during set-up at once, with nothing
half-written).
"""

import os
import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from bigbigan_tf import defaults

_DEFAULT_CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                               'bigbigan_tf', 'configs', 'mnist.py')

_CONFIG = config_flags.DEFINE_config_file(
    'config', _DEFAULT_CONFIG, 'Config file; override fields with '
    '--config.FIELD=VALUE (e.g. --config.num_train_steps=100).',
    lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Directory for the config, '
                               'checkpoints, summaries and grids (gs:// ok).')
_STRATEGY = flags.DEFINE_enum(
    'strategy', 'auto', list(defaults.STRATEGY_KINDS),
    'Distribution strategy; auto = TPU if --tpu is set, else all GPUs, else '
    'the CPU.')
_TPU = flags.DEFINE_string('tpu', None, "TPU name or address; 'local' on a "
                           'TPU VM.')
_NUM_GPUS = flags.DEFINE_integer('num_gpus', None, 'GPUs to use (default all).')
_CPU_DEVICES = flags.DEFINE_integer(
    'cpu_devices', 1, 'Split the CPU into this many logical devices (to run '
    'several replicas on one CPU, e.g. to test MirroredStrategy).')


def _parse_flags(argv):
  """absl's flag parsing, with --config failures as one line and exit 2.

  The --config file is loaded and its overrides applied while absl parses the
  flags, before main(): a missing file raises OSError, an unknown field
  AttributeError or KeyError. (absl reports ordinary flag errors itself.)
  """
  try:
    remaining = app.parse_flags_with_usage(argv)
    # config_flags defers a loading failure to the first use of the config.
    _CONFIG.value.to_dict()
  except (OSError, AttributeError, KeyError, TypeError, ValueError) as e:
    text = str(e).strip()
    overrides = [a.split('=', 1)[0] for a in argv[1:]
                 if a.startswith('--config.')]
    if isinstance(e, OSError):
      given = [a for a in argv[1:] if a.startswith('--config=')]
      where = given[-1].split('=', 1)[1] if given else _DEFAULT_CONFIG
      # The last line says why (e.g. [Errno 2] No such file or directory).
      lines = [line.strip() for line in text.splitlines() if line.strip()]
      reason = lines[-1] if lines else type(e).__name__
      message = (f'--config={where} cannot be loaded ({reason}). Pass an '
                 'existing config file, e.g. '
                 '--config=bigbigan_tf/configs/tiny.py.')
    elif not isinstance(e, (AttributeError, KeyError)):
      message = (f'the --config flags cannot be applied ({type(e).__name__}: '
                 f'{text}). Check the config file and every --config.FIELD.')
    else:
      field = text.strip('"\'')
      culprit = [o for o in overrides
                 if field and field in o[len('--config.'):].split('.')]
      named = culprit[0] if culprit else ' '.join(overrides) or '--config'
      message = (f'{named}: the config has no field {field!r} '
                 f'({type(e).__name__}). Every --config.FIELD must name a '
                 'field of bigbigan_tf/configs/base.py (dots for nested '
                 'fields, e.g. --config.optim.d_lr=0.0002).')
    print(f'error: {message}', file=sys.stderr)
    sys.exit(2)
  return remaining


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  # First thing: a signal during set-up (loading TensorFlow, building,
  # restoring, the step-0 save) ends the run at once, nothing half-written;
  # the training loop answers them itself (preemption.StopSignal).
  from bigbigan_tf import preemption  # pylint: disable=g-import-not-at-top
  preemption.answer_during_set_up()
  try:
    _main()
  except preemption.SetUpInterrupted as e:
    name = e.signal_name
    message = (f'Received {name} during set-up, before training started: '
               'nothing half-written. Re-run the same command to start or '
               'resume.')
    logging.warning('%s', message)
    print(message, file=sys.stderr)
    _exit_now(128 + {'SIGTERM': 15, 'SIGINT': 2}[name])


def _exit_now(code: int) -> None:
  """Exits without the interpreter's slow shutdown (see _main)."""
  logging.flush()
  sys.stdout.flush()
  sys.stderr.flush()
  os._exit(code)  # pylint: disable=protected-access


def _last_good_checkpoint(workdir: str):
  """The newest readable checkpoint of `workdir`, or None (none, or unknown)."""
  from bigbigan_tf import checkpoints  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  try:
    return checkpoints.latest_readable(
        os.path.join(workdir, checkpoints.CHECKPOINT_DIR))
  except (checkpoints.UnreadableCheckpointError, tf.errors.OpError, OSError):
    return None


def _main():
  """Trains; what goes wrong before or during the run is one line, exit 2."""
  # Imported here so --help answers without loading TensorFlow.
  from bigbigan_tf import checkpoints  # pylint: disable=g-import-not-at-top
  from bigbigan_tf import config_lib  # pylint: disable=g-import-not-at-top
  from bigbigan_tf import data as data_lib  # pylint: disable=g-import-not-at-top
  from bigbigan_tf import distribute  # pylint: disable=g-import-not-at-top
  from bigbigan_tf import hardware  # pylint: disable=g-import-not-at-top
  from bigbigan_tf import lease  # pylint: disable=g-import-not-at-top
  from bigbigan_tf import train_lib  # pylint: disable=g-import-not-at-top
  from bigbigan_tf import write_faults  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  try:
    if _CPU_DEVICES.value > 1:
      distribute.configure_cpu_devices(_CPU_DEVICES.value)
    strategy = distribute.make_strategy(kind=_STRATEGY.value, tpu=_TPU.value,
                                        num_gpus=_NUM_GPUS.value)
    result = train_lib.train_and_evaluate(_CONFIG.value, _WORKDIR.value,
                                          strategy=strategy)
  except (config_lib.ConfigError, checkpoints.ConfigConflictError,
          checkpoints.WorkdirError, checkpoints.UnreadableCheckpointError,
          data_lib.DataError, distribute.StrategyError,
          hardware.HardwareError, lease.LeaseError,
          train_lib.NonFiniteLossError) as e:
    logging.error('%s: %s', type(e).__name__, e)
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)
  except (tf.errors.OpError, OSError) as e:
    # A full disk, a quota or a permission while writing checkpoints,
    # summaries, grids, config.json or hardware.json.
    if write_faults.describe(e) is None:
      raise
    message = write_faults.message(
        e, _WORKDIR.value,
        last_checkpoint=_last_good_checkpoint(_WORKDIR.value))
    logging.error('%s: %s', type(e).__name__, e)
    print(f'error: {message}', file=sys.stderr)
    sys.exit(2)
  logging.info('Finished at step %d; checkpoint %s.', result['step'],
               result['checkpoint'])
  if result['stopped_by']:
    code = 128 + {'SIGTERM': 15, 'SIGINT': 2}[result['stopped_by']]
    # The checkpoint is written and the summaries flushed; a preempted VM
    # has seconds left, so skip the interpreter's slow shutdown. After a
    # signal during tracing ('abandoned_loop_call') the loop call still runs
    # in a daemon thread, which a normal shutdown could wait on or crash in.
    _exit_now(code)


if __name__ == '__main__':
  flags.mark_flags_as_required(['workdir'])
  app.run(main, flags_parser=_parse_flags)
