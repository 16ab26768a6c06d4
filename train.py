"""Trains BigBiGAN: python train.py --workdir=W [--config=...] [--config.x=v].

With no --config it trains the offline default (bigbigan_tf/configs/mnist.py,
5,000 real MNIST digits). Re-running the same command resumes from the latest
checkpoint in W. Strategy: --strategy=auto|cpu|gpu|tpu|multi_worker.
"""

import os
import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

_DEFAULT_CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                               'bigbigan_tf', 'configs', 'mnist.py')

_CONFIG = config_flags.DEFINE_config_file(
    'config', _DEFAULT_CONFIG, 'Config file; override fields with '
    '--config.FIELD=VALUE (e.g. --config.num_train_steps=100).',
    lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Directory for the config, '
                               'checkpoints, summaries and grids (gs:// ok).')
_STRATEGY = flags.DEFINE_enum(
    'strategy', 'auto', ['auto', 'cpu', 'gpu', 'tpu', 'multi_worker'],
    'Distribution strategy; auto = TPU if --tpu is set, else all GPUs, else '
    'the CPU.')
_TPU = flags.DEFINE_string('tpu', None, "TPU name or address; 'local' on a "
                           'TPU VM.')
_NUM_GPUS = flags.DEFINE_integer('num_gpus', None, 'GPUs to use (default all).')
_CPU_DEVICES = flags.DEFINE_integer(
    'cpu_devices', 1, 'Split the CPU into this many logical devices (to run '
    'several replicas on one CPU, e.g. to test MirroredStrategy).')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  # Imported here so --help answers without loading TensorFlow.
  from bigbigan_tf import checkpoints  # pylint: disable=g-import-not-at-top
  from bigbigan_tf import config_lib  # pylint: disable=g-import-not-at-top
  from bigbigan_tf import data as data_lib  # pylint: disable=g-import-not-at-top
  from bigbigan_tf import distribute  # pylint: disable=g-import-not-at-top
  from bigbigan_tf import train_lib  # pylint: disable=g-import-not-at-top

  try:
    if _CPU_DEVICES.value > 1:
      distribute.configure_cpu_devices(_CPU_DEVICES.value)
    strategy = distribute.make_strategy(kind=_STRATEGY.value, tpu=_TPU.value,
                                        num_gpus=_NUM_GPUS.value)
    result = train_lib.train_and_evaluate(_CONFIG.value, _WORKDIR.value,
                                          strategy=strategy)
  except (config_lib.ConfigError, checkpoints.ConfigConflictError,
          data_lib.DataError, distribute.StrategyError,
          train_lib.NonFiniteLossError) as e:
    logging.error('%s: %s', type(e).__name__, e)
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)
  logging.info('Finished at step %d; checkpoint %s.', result['step'],
               result['checkpoint'])
  if result['stopped_by']:
    code = 128 + {'SIGTERM': 15, 'SIGINT': 2}[result['stopped_by']]
    # The checkpoint is written and the summaries flushed; a preempted VM
    # has seconds left, so skip the interpreter's slow shutdown. After a
    # signal during tracing ('abandoned_loop_call') the loop call still runs
    # in a daemon thread, which a normal shutdown could wait on or crash in.
    logging.flush()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # pylint: disable=protected-access


if __name__ == '__main__':
  flags.mark_flags_as_required(['workdir'])
  app.run(main)
