"""Builds the `tf.distribute.Strategy` a run trains under.

One factory, `make_strategy`, for every place the project runs: Cloud TPU
(`TPUStrategy`), one host with GPUs (`MirroredStrategy`), several hosts
(`MultiWorkerMirroredStrategy` from `TF_CONFIG`) and CPUs. A CPU can be split
into several logical devices (`configure_cpu_devices`) so that multi-replica
code paths, such as cross-replica batch norm and per-replica batch sizes, are
exercised on a laptop or in tests.

Failures a user can fix (no TPU at that address, no GPU, no `TF_CONFIG`) raise
`StrategyError` with a message saying what to check, instead of a stack trace
from deep inside TensorFlow.

Under `MultiWorkerMirroredStrategy` every worker runs the same program, so
writes follow TensorFlow's multi-worker guide: `is_chief` tells the one worker
that writes to the real locations; every worker takes part in a checkpoint
save (saving reads the variables, which may need collectives), the others
into `worker_write_dir` (a per-worker temporary directory) that
`remove_worker_dir` deletes after each save. Every worker restores from the
chief's checkpoints, so the workdir must be on a file system all workers see
(e.g. gs:// or NFS).
"""

from __future__ import annotations

import json
import os

from absl import logging
import tensorflow as tf

from bigbigan_tf import defaults

KINDS = defaults.STRATEGY_KINDS


class StrategyError(RuntimeError):
  """A distribution strategy cannot be built as asked."""


def configure_cpu_devices(n: int) -> None:
  """Splits the physical CPU into `n` logical devices.

  With `n` > 1, `make_strategy(kind='cpu')` then mirrors over the logical
  devices, which runs real multi-replica code on one CPU.

  Must be called before TensorFlow initialises its devices (before the first
  op, tensor or device listing). Calling it again later with the same `n` is a
  no-op.

  Args:
    n: number of logical CPU devices, >= 1.

  Raises:
    StrategyError: `n` < 1, or TensorFlow already initialised its devices with
      a different number of logical CPUs.
  """
  if n < 1:
    raise StrategyError(f'configure_cpu_devices(n={n}): n must be >= 1.')
  cpu = tf.config.list_physical_devices('CPU')[0]
  try:
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(n)])
  except RuntimeError as e:
    # TF refuses any change once the runtime exists; that is only a problem if
    # the existing layout differs from the one asked for.
    current = len(tf.config.list_logical_devices('CPU'))
    if current == n:
      return
    raise StrategyError(
        f'Cannot split the CPU into {n} logical devices: TensorFlow has '
        f'already initialised its devices ({current} logical CPU device(s)). '
        'Call bigbigan_tf.distribute.configure_cpu_devices() at program start, '
        'before any TensorFlow op runs or any device is listed (in tests: in a '
        'fresh process).') from e
  logging.info('Split the CPU into %d logical devices.', n)


def make_strategy(*,
                  kind: str = 'auto',
                  tpu: str | None = None,
                  num_gpus: int | None = None) -> tf.distribute.Strategy:
  """Returns the distribution strategy for this machine.

  Args:
    kind: 'tpu' (`TPUStrategy` on the TPU named by `tpu`), 'gpu'
      (`MirroredStrategy` over this host's GPUs), 'multi_worker'
      (`MultiWorkerMirroredStrategy`, cluster read from the `TF_CONFIG`
      environment variable), 'cpu' (`MirroredStrategy` over the logical CPU
      devices if `configure_cpu_devices` made several, else
      `OneDeviceStrategy('/cpu:0')`) or 'auto' ('tpu' if `tpu` is given, else
      'gpu' if there is a GPU, else 'cpu').
    tpu: TPU name or grpc address for `TPUClusterResolver`; 'local' on a TPU VM.
    num_gpus: number of GPUs to mirror over with kind 'gpu' (None = all).

  Returns:
    The strategy. Its `num_replicas_in_sync` is the number of replicas the
    global batch is split over.

  Raises:
    StrategyError: an unknown kind, or the requested hardware or cluster is
      not there.
  """
  if kind not in KINDS:
    raise StrategyError(
        f'Unknown strategy kind {kind!r}; use one of {", ".join(KINDS)}.')
  if kind == 'auto':
    if tpu:
      kind = 'tpu'
    elif tf.config.list_physical_devices('GPU'):
      kind = 'gpu'
    else:
      kind = 'cpu'

  if kind == 'tpu':
    strategy = _tpu_strategy(tpu)
  elif kind == 'gpu':
    strategy = _gpu_strategy(num_gpus)
  elif kind == 'multi_worker':
    strategy = _multi_worker_strategy()
  else:
    strategy = _cpu_strategy()
  logging.info('Using %s with %d replica(s) (kind=%r).',
               type(strategy).__name__, strategy.num_replicas_in_sync, kind)
  return strategy


def _tpu_strategy(tpu: str | None) -> tf.distribute.Strategy:
  """TPUStrategy on `tpu`; any failure to reach it becomes a StrategyError."""
  try:
    resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu)
    tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
  # The resolver and TPU initialisation fail in many ways depending on where
  # they run: ValueError (no name, not on GCE), NotFoundError / other OpError
  # (no TPU devices), OSError (the GCE API is unreachable), ImportError.
  except (ValueError, OSError, ImportError, RuntimeError,
          tf.errors.OpError) as e:
    raise StrategyError(
        f'Could not connect to the TPU {tpu!r}: {type(e).__name__}: '
        f'{_first_line(e)}\nCheck that the TPU exists and is READY (`gcloud '
        'compute tpus tpu-vm list`), that this VM runs in the same zone and '
        "project, and pass --tpu=NAME (or --tpu=local on a TPU VM). To run "
        'without a TPU use the gpu or cpu strategy.') from e
  return tf.distribute.TPUStrategy(resolver)


def _gpu_strategy(num_gpus: int | None) -> tf.distribute.Strategy:
  """MirroredStrategy over the first `num_gpus` GPUs (all if None)."""
  gpus = tf.config.list_logical_devices('GPU')
  if not gpus:
    raise StrategyError(
        'The gpu strategy was asked for but TensorFlow sees no GPU. Check '
        '`nvidia-smi`, that the installed TensorFlow has CUDA support '
        '(`pip install tensorflow[and-cuda]`) and CUDA_VISIBLE_DEVICES; or use '
        'the cpu strategy.')
  if num_gpus is not None:
    if not 1 <= num_gpus <= len(gpus):
      raise StrategyError(
          f'num_gpus={num_gpus} but this host has {len(gpus)} GPU(s); pass a '
          f'number between 1 and {len(gpus)}, or leave it unset to use all.')
    gpus = gpus[:num_gpus]
  return tf.distribute.MirroredStrategy(devices=[d.name for d in gpus])


def _multi_worker_strategy() -> tf.distribute.Strategy:
  """MultiWorkerMirroredStrategy over the cluster described by TF_CONFIG."""
  tf_config = os.environ.get('TF_CONFIG')
  if not tf_config:
    raise StrategyError(
        'The multi_worker strategy reads the cluster from the TF_CONFIG '
        'environment variable, which is not set. Set it on every worker, e.g. '
        'TF_CONFIG=\'{"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
        '"task": {"type": "worker", "index": 0}}\' (index = this worker\'s '
        'position in the list); see '
        'https://www.tensorflow.org/guide/distributed_training.')
  try:
    json.loads(tf_config)
  except ValueError as e:
    raise StrategyError(
        f'TF_CONFIG is not valid JSON ({e}): {tf_config!r}. It must describe '
        'the cluster and this task, e.g. {"cluster": {"worker": [...]}, '
        '"task": {"type": "worker", "index": 0}}.') from e
  return tf.distribute.MultiWorkerMirroredStrategy()


def task(strategy: tf.distribute.Strategy) -> tuple[str | None, int | None]:
  """(task type, task id) of this process in a multi-worker cluster.

  (None, None) for a strategy without a cluster (one host).
  """
  resolver = getattr(strategy, 'cluster_resolver', None)
  if resolver is None or not isinstance(
      strategy, tf.distribute.MultiWorkerMirroredStrategy):
    return None, None
  return resolver.task_type, resolver.task_id


def is_chief(strategy: tf.distribute.Strategy) -> bool:
  """Whether this process writes summaries, grids, configs and checkpoints.

  The chief is the 'chief' task if the cluster has one, else worker 0; with
  no cluster (one host, any strategy) it is this process.
  """
  task_type, task_id = task(strategy)
  if task_type is None or task_type == 'chief':
    return True
  cluster = strategy.cluster_resolver.cluster_spec().as_dict()
  return task_type == 'worker' and task_id == 0 and 'chief' not in cluster


def worker_write_dir(directory: str, strategy: tf.distribute.Strategy) -> str:
  """Where this worker writes what is meant for `directory`.

  The chief writes to `directory` itself; another worker to
  PARENT/workertemp_ID/NAME, removed by `remove_worker_dir`.
  """
  if is_chief(strategy):
    return directory
  _, task_id = task(strategy)
  parent, name = os.path.split(directory.rstrip('/'))
  return os.path.join(parent, f'workertemp_{task_id}', name)


def remove_worker_dir(write_dir: str, strategy: tf.distribute.Strategy
                      ) -> None:
  """Deletes a non-chief's temporary directory (its workertemp_ID parent)."""
  if is_chief(strategy):
    return
  temp = os.path.dirname(write_dir.rstrip('/'))
  if (os.path.basename(temp).startswith('workertemp_')
      and tf.io.gfile.exists(temp)):
    tf.io.gfile.rmtree(temp)


def wait_for_chief(strategy: tf.distribute.Strategy,
                   refusal: Exception | None, workdir: str) -> None:
  """Every worker learns whether the chief holds the workdir's lease.

  A second multi-worker run's workers must not touch the workdir (not even
  delete their workertemp_ID, which may be the live run's) unless their chief
  holds it. The chief's verdict is all-reduced (a sum of refusals over every
  replica), so the workers wait here for it. One host: nothing to wait for.

  Args:
    strategy: the run's strategy.
    refusal: on the chief, the error that refused it the lease, else None.
    workdir: for the workers' message.

  Raises:
    The chief's `refusal` on the chief; StrategyError on the other workers of
    a refused chief. Nothing was written either way.
  """
  if task(strategy)[0] is not None:
    vote = float(refusal is not None)
    votes = strategy.run(lambda: tf.constant(vote))
    refused = float(strategy.reduce(tf.distribute.ReduceOp.SUM, votes,
                                    axis=None)) > 0
    if refused and refusal is None:
      raise StrategyError(
          f'the chief of this multi-worker run could not hold --workdir='
          f'{workdir} (its log says why); this worker wrote nothing.')
  if refusal is not None:
    raise refusal


def _cpu_strategy() -> tf.distribute.Strategy:
  """Mirrors over the logical CPUs if there are several, else one device."""
  cpus = tf.config.list_logical_devices('CPU')
  if len(cpus) > 1:
    return tf.distribute.MirroredStrategy(devices=[d.name for d in cpus])
  return tf.distribute.OneDeviceStrategy('/cpu:0')


def _first_line(error: Exception) -> str:
  # TF errors carry multi-line op dumps; the start of the first line says
  # what happened.
  text = str(error).strip()
  line = text.splitlines()[0] if text else repr(error)
  return line if len(line) <= 300 else line[:300] + ' ...'
