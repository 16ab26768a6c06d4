"""BigBiGAN's training loop: D steps and E/G steps under a tf.distribute strategy.

One iteration = `optim.disc_iters` D steps (each on a fresh real batch), then
one E/G step (on the last real batch), as in BigGAN's alternating schedule.
`train.steps_per_loop` iterations run inside one `tf.function` call through
`tf.range`, so Python leaves the device loop only to log, write grids and
checkpoint.

The workdir layout, the checkpointed `TrainState` and `restore` live in
`bigbigan_tf.checkpoints`.
"""

import os
import signal
import threading
import time
from typing import Any, Optional

from absl import logging
import keras
import ml_collections
import numpy as np
import tensorflow as tf

from bigbigan_tf import checkpoints
from bigbigan_tf import config_lib
from bigbigan_tf import data as data_lib
from bigbigan_tf import distribute
from bigbigan_tf import grids
from bigbigan_tf import hardware
from bigbigan_tf import losses
from bigbigan_tf import monitoring
from bigbigan_tf.models import ops


class NonFiniteLossError(RuntimeError):
  """A loss became NaN or infinite; the last good checkpoint is kept."""


def metric_names() -> list[str]:
  """Names of the metrics one training iteration reports."""
  names = ['d_loss', 'eg_loss', 'g_ortho_reg']
  for head in losses.HEADS:
    names += [f'd_loss_{head}', f'eg_loss_{head}', f'd/real_{head}',
              f'd/fake_{head}']
  return names


def _ema_decay(config, step: tf.Tensor) -> tf.Tensor:
  """BigGAN: the average copies the weights until `ema_start`."""
  return tf.where(step >= config.train.ema_start,
                  tf.constant(config.train.ema_decay, tf.float32), 0.0)


def _dense(grads):
  """Gradients as dense tensors (None, for a variable that got none, kept)."""
  return [None if g is None else tf.convert_to_tensor(g) for g in grads]


def _add(a, b):
  """a + b, where None (no gradient) counts as zero."""
  return b if a is None else a if b is None else a + b


class Trainer:
  """Builds the compiled training loop for a TrainState under a strategy."""

  def __init__(self, state: checkpoints.TrainState, strategy: tf.distribute.Strategy):
    self.state, self.strategy = state, strategy
    self.config = state.config
    jit = self.config.train.jit_compile
    # No autograph inside the steps: their Python control flow is static, and
    # converting every Keras layer call makes tracing several times slower.
    self._d_step = tf.function(self._d_step_fn, jit_compile=jit,
                               autograph=False)
    self._eg_step = tf.function(self._eg_step_fn, jit_compile=jit,
                                autograph=False)
    self._d_then_eg_step = tf.function(self._d_then_eg_step_fn,
                                       jit_compile=jit, autograph=False)
    self.train_loop = tf.function(self._train_loop)
    # Read by the loop before every iteration (`_StopSignal`), and counted up
    # by it so the main thread can see progress inside a call. On the host,
    # outside any strategy scope: build the Trainer outside strategy.scope().
    with tf.init_scope(), tf.device('CPU:0'):
      self.stop_requested = tf.Variable(False, trainable=False,
                                        name='stop_requested')
      self.steps_in_call = tf.Variable(0, dtype=tf.int64, trainable=False,
                                       name='steps_in_call')
    # Fusing the last D step with the E/G step keeps E's and G's forward
    # activations taped through D's update; with k micro-batches it would
    # keep all k alive, which is what accumulation is there to avoid.
    self._fuse_d_and_eg = self.config.optim.eg_reuses_d_forward
    if self._fuse_d_and_eg and self.config.optim.grad_accum_steps > 1:
      self._fuse_d_and_eg = False
      logging.info('optim.eg_reuses_d_forward is skipped with '
                   'optim.grad_accum_steps = %d: the E/G step recomputes E(x) '
                   'and G(z) one micro-batch at a time.',
                   self.config.optim.grad_accum_steps)

  def _scores(self, x, z_hat, x_fake, z):
    """D on real pairs (x, E(x)) and fake pairs (G(z), z) in one call.

    D has no batch norm, so one call on the concatenation equals two calls.
    """
    d = self.state.nets.discriminator
    scores = d(tf.concat([x, x_fake], 0), tf.concat([z_hat, z], 0),
               training=True)
    n = tf.shape(x)[0]
    real = {k: v[:n] for k, v in scores.items()}
    fake = {k: v[n:] for k, v in scores.items()}
    return real, fake

  def _inputs(self, batch):
    s = self.state
    x_e = batch['image']
    b = tf.shape(x_e)[0]
    z = s.rng.normal([b, self.config.model.z_dim])
    noise = s.rng.normal([b, self.config.model.z_dim])
    x = ops.downsample_to(x_e, self.config.model.resolution)
    return x_e, x, z, noise

  def _score_means(self, prefix, real, fake, batch):
    out = {}
    for head in losses.HEADS:
      out[f'{prefix}real_{head}'] = tf.reduce_sum(real[head]) / batch
      out[f'{prefix}fake_{head}'] = tf.reduce_sum(fake[head]) / batch
    return out

  def _micro_batches(self, *tensors):
    """Splits per-replica tensors into `optim.grad_accum_steps` slices.

    Returns a list of k tuples; k = 1 returns the tensors themselves.
    """
    k = self.config.optim.grad_accum_steps
    if k == 1:
      return [tensors]
    return list(zip(*(tf.split(t, k, axis=0) for t in tensors)))

  def _accumulate(self, micro_batches, grads_fn):
    """Sums `grads_fn`'s gradients and metrics over the micro-batches.

    The micro-batches run one after another: each one's inputs wait for the
    previous one's gradients, so only one micro-batch's activations are alive
    at a time (tf.function would otherwise be free to run them side by side).
    A static Python loop, not tf.range: the replica function may hold
    cross-replica batch-norm all-reduces, which a nested while loop cannot
    hold under MirroredStrategy; tracing time grows with k.

    Args:
      micro_batches: a list of tuples of tensors (`_micro_batches`).
      grads_fn: (*micro_batch) -> (list of gradients, {name: scalar}).

    Returns:
      (summed gradients, summed metrics).
    """
    total_grads, total_metrics = None, None
    for micro in micro_batches:
      if total_grads is not None:
        with tf.control_dependencies(
            [g for g in total_grads if g is not None]):
          micro = [tf.identity(t) for t in micro]
      grads, metrics = grads_fn(*micro)
      if total_grads is None:
        total_grads, total_metrics = list(grads), dict(metrics)
      else:
        total_grads = [_add(a, b) for a, b in zip(total_grads, grads)]
        total_metrics = {k: v + metrics[k] for k, v in total_metrics.items()}
    return total_grads, total_metrics

  def _d_grads(self, x, z_hat, x_fake, z):
    """D's gradients and metrics on real pairs (x, z_hat), fake (x_fake, z).

    Losses and score means are divided by the global batch, so the sums
    over micro-batches (and replicas) are the full batch's.
    """
    s, gb = self.state, self.config.batch_size
    with tf.GradientTape() as tape:
      real, fake = self._scores(x, tf.stop_gradient(z_hat),
                                tf.stop_gradient(x_fake), z)
      loss, per_head = losses.discriminator_loss(real, fake,
                                                 global_batch_size=gb)
    grads = _dense(tape.gradient(loss, s.d_vars))
    return grads, {'d_loss': loss, **per_head,
                   **self._score_means('d/', real, fake, gb)}

  def _d_update(self, x, z_hat, x_fake, z):
    """One D step on real pairs (x, z_hat) and fake pairs (x_fake, z).

    With `optim.grad_accum_steps` = k the pairs are cut into k slices whose
    gradients are summed before the one update: D has no batch norm, so
    this equals the update on the whole batch.
    """
    s = self.state
    grads, metrics = self._accumulate(
        self._micro_batches(x, z_hat, x_fake, z), self._d_grads)
    s.d_opt.apply_gradients(zip(grads, s.d_vars))
    return metrics

  def _eg_losses(self, x, z_hat, x_fake, z):
    """E/G losses; call under a tape that recorded z_hat = E(x), G(z)."""
    s, gb = self.state, self.config.batch_size
    # Two calls here, not one on the concatenation: no gradient is asked
    # of D's weights, so the backward pass then skips F on the real images
    # (they lead to neither E nor G): half of F's backward in this step.
    d = s.nets.discriminator
    real = d(x, z_hat, training=True)
    fake = d(x_fake, z, training=True)
    loss, per_head = losses.encoder_generator_loss(real, fake,
                                                   global_batch_size=gb)
    return loss, {'eg_loss': loss, **per_head}

  def _ortho(self):
    """G's orthogonal regulariser, this replica's share (once per update)."""
    ortho = losses.orthogonal_regularization(
        self.state.g_vars, weight=self.config.optim.g_ortho_reg)
    # Replicas' gradients are summed: share the regulariser among them.
    return ortho, ortho / self.strategy.num_replicas_in_sync

  def _eg_grads(self, x_e, x, z, noise):
    """E's and G's gradients of the E/G loss on one micro-batch."""
    s = self.state
    with tf.GradientTape() as tape:
      z_hat, x_fake = self._forward(x_e, z, noise)
      loss, metrics = self._eg_losses(x, z_hat, x_fake, z)
    grads = _dense(tape.gradient(loss, s.g_vars + s.e_vars))
    return grads, metrics

  def _eg_apply(self, g_grads, e_grads):
    """Adds the orthogonal regulariser's gradient to G's; applies both."""
    s = self.state
    with tf.GradientTape() as tape:
      ortho, share = self._ortho()
    if self.config.optim.g_ortho_reg:
      g_grads = [_add(g, r) for g, r in zip(
          g_grads, _dense(tape.gradient(share, s.g_vars)))]
    s.g_opt.apply_gradients(zip(g_grads, s.g_vars))
    s.e_opt.apply_gradients(zip(e_grads, s.e_vars))
    return ortho

  def _forward(self, x_e, z, noise):
    s = self.state
    z_hat = s.nets.encoder(x_e, training=True, noise=noise)['z_sample']
    return z_hat, s.nets.generator(z, training=True)

  def _d_step_fn(self, batch):
    x_e, x, z, noise = self._inputs(batch)

    def grads_fn(x_e, x, z, noise):
      z_hat, x_fake = self._forward(x_e, z, noise)
      return self._d_grads(x, z_hat, x_fake, z)

    s = self.state
    grads, metrics = self._accumulate(
        self._micro_batches(x_e, x, z, noise), grads_fn)
    s.d_opt.apply_gradients(zip(grads, s.d_vars))
    return metrics

  def _eg_step_fn(self, batch):
    """One E/G update; its gradients summed over the micro-batches."""
    x_e, x, z, noise = self._inputs(batch)
    grads, metrics = self._accumulate(
        self._micro_batches(x_e, x, z, noise), self._eg_grads)
    n_g = len(self.state.g_vars)
    ortho = self._eg_apply(grads[:n_g], grads[n_g:])
    return {**metrics, 'g_ortho_reg': ortho}

  def _d_then_eg_step_fn(self, batch):
    """The last D step, then the E/G step on the same E(x) and G(z).

    E and G do not change during a D step, so the E/G step's forward passes
    of E and G would recompute exactly what the D step computed (same x, z,
    noise): they run once, under a tape kept for the E/G gradients, and D's
    update runs in between with recording paused. D's second pair of calls
    reads D's updated weights (tf.function orders reads after the update).
    Equal to a D step followed by an E/G step drawing the same z and noise;
    saves one forward pass of E and of G per iteration. Only used with
    `optim.grad_accum_steps` = 1 (see `Trainer.__init__`).
    """
    s = self.state
    x_e, x, z, noise = self._inputs(batch)
    with tf.GradientTape() as tape:
      z_hat, x_fake = self._forward(x_e, z, noise)
      with tape.stop_recording():
        d_metrics = self._d_update(x, z_hat, x_fake, z)
      loss, metrics = self._eg_losses(x, z_hat, x_fake, z)
    grads = _dense(tape.gradient(loss, s.g_vars + s.e_vars))
    n_g = len(s.g_vars)
    ortho = self._eg_apply(grads[:n_g], grads[n_g:])
    return {**d_metrics, **metrics, 'g_ortho_reg': ortho}

  def _reduce(self, per_replica):
    return {k: self.strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None)
            for k, v in per_replica.items()}

  def _iteration(self, iterator):
    """disc_iters D steps, one E/G step (on the last D batch), EMA update."""
    s = self.state
    d_iters = self.config.optim.disc_iters
    if self._fuse_d_and_eg:
      for _ in range(d_iters - 1):
        self._reduce(self.strategy.run(self._d_step, (next(iterator),)))
      metrics = self._reduce(
          self.strategy.run(self._d_then_eg_step, (next(iterator),)))
    else:
      for _ in range(d_iters):
        batch = next(iterator)
        d_metrics = self._reduce(self.strategy.run(self._d_step, (batch,)))
      eg_metrics = self._reduce(self.strategy.run(self._eg_step, (batch,)))
      metrics = {**d_metrics, **eg_metrics}
    s.step.assign_add(1)
    decay = _ema_decay(self.config, s.step)
    s.g_ema.update(decay)
    s.e_ema.update(decay)
    # ortho is not scaled by the global batch: undo the replica sum.
    metrics['g_ortho_reg'] /= self.strategy.num_replicas_in_sync
    return metrics

  def _stop_now(self):
    """Whether a stop was requested; under multi-worker, by any worker.

    Workers must leave the loop at the same step (a collective would wait
    forever for one that left), so there the flags are summed across them.
    """
    flag = tf.cast(self.stop_requested, tf.float32)
    if isinstance(self.strategy, tf.distribute.MultiWorkerMirroredStrategy):
      flag = self.strategy.reduce(
          tf.distribute.ReduceOp.SUM,
          self.strategy.run(lambda: tf.cast(self.stop_requested, tf.float32)),
          axis=None)
    return flag > 0

  def _train_loop(self, iterator, num_steps):
    """Runs up to `num_steps` iterations; stops early on `stop_requested`.

    Returns the metrics averaged over the iterations run, plus 'steps_run'
    (int32) and 'stopped' (bool: the loop ended on a stop request).
    """
    totals = {k: tf.constant(0.0) for k in metric_names()}
    done = tf.constant(0)
    stopped = tf.constant(False)
    for _ in tf.range(num_steps):
      stopped = self._stop_now()
      if stopped:
        break
      metrics = self._iteration(iterator)
      totals = {k: totals[k] + metrics[k] for k in totals}
      done += 1
      self.steps_in_call.assign_add(1)
    out = {k: v / tf.cast(tf.maximum(done, 1), tf.float32)
           for k, v in totals.items()}
    return {**out, 'steps_run': done, 'stopped': stopped}


class _StopSignal:
  """Turns SIGTERM / SIGINT into a stop request the compiled loop reads.

  Python runs signal handlers in the main thread only, between bytecodes:
  never while that thread is inside a tf.function call. So `call` runs the
  loop call in a worker thread and waits for it in short, interruptible
  waits; on a signal it sets the trainer's `stop_requested` variable, which
  the loop checks before each iteration (it ends after the current step).
  """

  POLL_S = 0.2

  def __init__(self):
    self.received = None
    self._previous = {}

  def __enter__(self):
    for sig in (signal.SIGTERM, signal.SIGINT):
      try:
        self._previous[sig] = signal.signal(sig, self._handle)
      except ValueError:  # not the main thread: leave signals alone
        pass
    return self

  def _handle(self, signum, frame):
    del frame
    if self.received is None:
      self.received = signal.Signals(signum).name

  def __exit__(self, *exc):
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)

  def call(self, trainer, iterator, n, *, unsaved_steps, on_first_step=None):
    """Runs `trainer.train_loop(iterator, n)`; answers signals meanwhile.

    Args:
      trainer: the Trainer.
      iterator: the data iterator.
      n: iterations to run (fewer if a stop is requested).
      unsaved_steps: steps done since the last checkpoint before this call.
      on_first_step: called (in the main thread) once the call has finished
        its first iteration, with the seconds since the call began.

    Returns:
      The loop's outputs as Python values, or None when a signal arrived and
      no step was done since the last checkpoint (e.g. the loop was still
      being traced or compiled): nothing new to save, so the call is left
      running in its (daemon) thread and the caller must exit the process.
    """
    if self.received is not None:
      trainer.stop_requested.assign(True)
    trainer.steps_in_call.assign(0)
    policy = keras.config.dtype_policy()
    result = {}

    def run():
      # Keras keeps its global state per thread.
      keras.config.set_dtype_policy(policy)
      try:
        out = trainer.train_loop(iterator, tf.constant(n, tf.int32))
        result['out'] = {k: v.numpy() for k, v in out.items()}
      except BaseException as e:  # pylint: disable=broad-except
        result['error'] = e

    thread = threading.Thread(target=run, name='train_loop', daemon=True)
    start = time.time()
    thread.start()
    first_step_seen = False
    while thread.is_alive():
      thread.join(self.POLL_S)
      ran = int(trainer.steps_in_call.numpy())
      if ran and not first_step_seen:
        first_step_seen = True
        if on_first_step is not None:
          on_first_step(time.time() - start)
      if self.received is not None and thread.is_alive():
        if unsaved_steps + ran == 0:
          return None
        trainer.stop_requested.assign(True)
    if 'error' in result:
      raise result['error']
    out = result['out']
    return {k: (int(v) if k == 'steps_run' else
                bool(v) if k == 'stopped' else float(v))
            for k, v in out.items()}


def _fixed_inputs(config, num: int):
  """Fixed z for samples and fixed eval images for reconstructions."""
  z = np.random.default_rng(config.seed).standard_normal(
      (num, config.model.z_dim)).astype(np.float32)
  ds = data_lib.make_dataset(config.data, image_size=config.model.encoder_resolution,
                             batch_size=num, training=False,
                             seed=config.seed)
  images = next(iter(ds))['image'].numpy()
  return z, images


def write_grids(state: checkpoints.TrainState, workdir: str, step: int, z: np.ndarray,
                real: np.ndarray, writer=None) -> dict[str, str]:
  """Samples G_ema(z) and reconstructions G_ema(E_ema(x).z_mean) as PNGs."""
  cols = state.config.train.grid_size
  samples = state.ema_generator(z, training=False).numpy()
  z_rec = state.ema_encoder(real, training=False)['z_mean']
  recon = state.ema_generator(z_rec, training=False).numpy()
  real_small = ops.downsample_to(tf.constant(real),
                             state.config.model.resolution).numpy()
  sample_grid = grids.image_grid(samples, rows=cols, cols=cols)
  recon_grid = grids.reconstruction_grid(real_small, recon, cols=cols)
  paths = {}
  for name, grid in (('samples', sample_grid),
                     ('reconstructions', recon_grid)):
    paths[name] = os.path.join(workdir, 'grids', f'{name}_{step:08d}.png')
    grids.write_png(paths[name], grid)
    if writer is not None:
      with writer.as_default():
        tf.summary.image(name, grid[None], step=step)
  return paths


def _format_eta(seconds: float) -> str:
  seconds = int(seconds)
  return f'{seconds // 3600}h{seconds % 3600 // 60:02d}m{seconds % 60:02d}s'


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *,
                       strategy: Optional[tf.distribute.Strategy] = None
                       ) -> dict[str, Any]:
  """Trains (or resumes) BigBiGAN in `workdir` up to `config.num_train_steps`.

  Args:
    config: a full config (configs/base.py).
    workdir: where config, checkpoints, summaries and grids go (gs:// works).
    strategy: a tf.distribute strategy; None = the default (one device).

  Returns:
    {'step': final step, 'metrics': the last logged metrics (floats),
     'checkpoint': path of the last checkpoint, 'stopped_by': signal or None,
     'abandoned_loop_call': True when a signal came before any step since the
     last checkpoint (e.g. during tracing): the loop call still runs in a
     daemon thread and the process should exit at once (train.py does),
     'state': the TrainState}.

  Raises:
    ConfigError / checkpoints.ConfigConflictError / DataError /
      checkpoints.WorkdirError / checkpoints.UnreadableCheckpointError: before
      training starts.
    NonFiniteLossError: a loss became NaN/inf (last good checkpoint kept).
  """
  strategy = strategy or tf.distribute.get_strategy()
  config_lib.validate(config, num_replicas=strategy.num_replicas_in_sync)
  # Every worker checks the config; the chief alone writes it.
  checkpoints.check_workdir_config(config, workdir,
                                   write=distribute.is_chief(strategy))
  # 'auto' precision and speed switches, settled for this machine; the
  # workdir keeps the config as given, and W/hardware.json what it became.
  resolution = hardware.resolve(config)
  for line in resolution.log_lines():
    logging.info('%s', line)
  config = resolution.config
  if config.train.deterministic:
    tf.config.experimental.enable_op_determinism()
  keras.utils.set_random_seed(config.seed)
  previous_policy = keras.config.dtype_policy()
  keras.config.set_dtype_policy(config.train.precision)
  try:
    return _train(config, workdir, strategy, resolution)
  finally:
    keras.config.set_dtype_policy(previous_policy)


def _data_iterator(config, strategy, *, seed):
  """The training batches: a plain iterator on one replica, else distributed.

  A plain tf.data iterator is trackable, so its position can be checkpointed
  (`train.checkpoint_data_iterator`); distributed iterators are not.
  """
  if strategy.num_replicas_in_sync == 1 and not isinstance(
      strategy, tf.distribute.TPUStrategy):
    return iter(data_lib.make_dataset(
        config.data, image_size=config.model.encoder_resolution,
        batch_size=config.batch_size, training=True, seed=seed))
  if config.train.checkpoint_data_iterator:
    raise config_lib.ConfigError(
        'config.train.checkpoint_data_iterator = True needs a single replica '
        f'(this strategy has {strategy.num_replicas_in_sync}): distributed '
        'iterators cannot be checkpointed. Set '
        '--config.train.checkpoint_data_iterator=False.')
  return iter(data_lib.distributed_dataset(
      strategy, config.data, image_size=config.model.encoder_resolution,
      global_batch_size=config.batch_size, seed=seed))


def _hardware_snapshot(workdir: str) -> Optional[bytes]:
  path = os.path.join(workdir, hardware.HARDWARE_FILENAME)
  if not tf.io.gfile.exists(path):
    return None
  with tf.io.gfile.GFile(path, 'rb') as f:
    return f.read()


def _record_hardware(resolution, workdir, step, strategy, snapshot):
  """The chief appends to W/hardware.json; the others only compute the warning.

  A non-chief computes it from `snapshot`, the file as it was before the
  chief could change it, in its temporary directory, so that every worker
  decides alike whether to restart the data stream.
  """
  if distribute.is_chief(strategy):
    return hardware.record_in_workdir(resolution, workdir, step)
  temp = distribute.worker_write_dir(os.path.join(workdir, 'hardware'),
                                     strategy)
  tf.io.gfile.makedirs(temp)
  try:
    if snapshot is not None:
      with tf.io.gfile.GFile(os.path.join(temp, hardware.HARDWARE_FILENAME),
                             'wb') as f:
        f.write(snapshot)
    return hardware.record_in_workdir(resolution, temp, step)
  finally:
    distribute.remove_worker_dir(temp, strategy)


def _train(config, workdir, strategy, resolution):
  t = config.train
  chief = distribute.is_chief(strategy)
  checkpoint_dir = os.path.join(workdir, checkpoints.CHECKPOINT_DIR)
  # Non-chiefs save into a temporary directory, deleted after each save.
  write_dir = distribute.worker_write_dir(checkpoint_dir, strategy)
  distribute.remove_worker_dir(write_dir, strategy)  # A crashed run's.
  # Read before building the state: under MultiWorkerMirroredStrategy,
  # creating the variables waits for every worker, so the chief cannot have
  # appended this run's entry yet.
  hardware_snapshot = None if chief else _hardware_snapshot(workdir)
  with strategy.scope():
    state = checkpoints.TrainState(config)
  iterator = _data_iterator(config, strategy, seed=config.seed)
  extra = {'data_iterator': iterator} if t.checkpoint_data_iterator else {}
  ckpt = state.checkpoint(**extra)
  manager = tf.train.CheckpointManager(
      ckpt, write_dir, max_to_keep=t.keep_checkpoints,
      step_counter=state.step)
  # Every worker resumes from the chief's newest readable checkpoint (an
  # unreadable newer one is skipped with a warning).
  resumed_from = checkpoints.latest_readable(checkpoint_dir)
  if resumed_from:
    ckpt.restore(resumed_from).assert_existing_objects_matched()
    logging.info('Resumed from %s (step %d).', resumed_from,
                 int(state.step.numpy()))

  def save(step: int) -> str:
    """Saves on every worker; returns the chief's checkpoint path."""
    path = manager.save(checkpoint_number=step)
    distribute.remove_worker_dir(write_dir, strategy)
    return os.path.join(checkpoint_dir, os.path.basename(path))

  changed = _record_hardware(resolution, workdir, int(state.step.numpy()),
                             strategy, hardware_snapshot)
  if changed:
    logging.warning('%s', changed)
    if not t.checkpoint_data_iterator:
      # Without a stored position, restart the stream on a new seed so a
      # resumed run does not replay the first batches.
      iterator = _data_iterator(config, strategy,
                                seed=config.seed + int(state.step.numpy()))
  trainer = Trainer(state, strategy)
  # Summaries and grids: the chief's alone (no doubled curves).
  writer = (tf.summary.create_file_writer(os.path.join(workdir, 'train'))
            if chief else tf.summary.create_noop_writer())
  grid_n = t.grid_size * t.grid_size
  fixed_z, fixed_real = (_fixed_inputs(config, grid_n) if chief
                         else (None, None))
  last_checkpoint = resumed_from

  step = int(state.step.numpy())
  total = config.num_train_steps
  if step == 0 and not resumed_from:
    last_checkpoint = save(0)
    if total == 0 and chief:
      write_grids(state, workdir, 0, fixed_z, fixed_real, writer)
  metrics, stopped_by = {}, None
  start_step, start_time = step, time.time()
  last_log_time, last_log_step = start_time, step
  collapse = monitoring.CollapseDetector()
  saved_step, first_call, abandoned = step, True, False

  def _log_compiled(seconds):
    logging.info('The training loop is compiled and running: first step '
                 'done %.1f s after the first call.', seconds)

  with _StopSignal() as stop:
    while step < total:
      boundaries = [total, step + t.steps_per_loop]
      for every in (t.log_every, t.checkpoint_every, t.grid_every):
        if every:
          boundaries.append((step // every + 1) * every)
      n = min(boundaries) - step
      if first_call:
        logging.info('Training from step %d: tracing and compiling the '
                     'loop.', step)
      out = stop.call(trainer, iterator, n,
                      unsaved_steps=step - saved_step,
                      on_first_step=_log_compiled if first_call else None)
      first_call = False
      if out is None:  # a signal, and nothing new since the last checkpoint
        stopped_by, abandoned = stop.received, True
        logging.warning('Received %s with no step done since %s: nothing '
                        'new to save; exiting. Re-run the same command to '
                        'resume.', stopped_by, last_checkpoint)
        break
      steps_run = out.pop('steps_run')
      # Under multi-worker, another worker's signal stops this one too.
      loop_stopped = out.pop('stopped')
      step += steps_run
      bad = {k: v for k, v in out.items()
             if steps_run and not np.isfinite(v)}
      if bad:
        raise NonFiniteLossError(
            f'Non-finite loss at step {step}: ' + ', '.join(
                f'{k} = {v}' for k, v in sorted(bad.items())) +
            f'. The last good checkpoint, {last_checkpoint}, is '
            'kept; lower the learning rates or use float32, then resume.')
      if steps_run:
        metrics = out
      if steps_run and (step % t.log_every == 0 or step == total):
        now = time.time()
        ips = (step - last_log_step) * config.batch_size / max(
            now - last_log_time, 1e-9)
        eta = (total - step) * (now - start_time) / max(step - start_step, 1)
        logging.info('step %d/%d (%.1f%%): d_loss %.4f, eg_loss %.4f, '
                     '%.1f images/s, ETA %s', step, total, 100 * step / total,
                     out['d_loss'], out['eg_loss'], ips, _format_eta(eta))
        svs = monitoring.singular_values(
            {'generator': state.nets.generator,
             'discriminator': state.nets.discriminator})
        for alarm in collapse.update(step,
                                     monitoring.collapse_signals(out, svs)):
          logging.warning('%s', monitoring.describe(
              alarm, checkpoint=last_checkpoint))
        with writer.as_default():
          for k, v in out.items():
            tf.summary.scalar(k, v, step=step)
          for k, v in monitoring.summary_scalars(svs).items():
            tf.summary.scalar(k, v, step=step)
          tf.summary.scalar('images_per_second', ips, step=step)
          for name, opt in (('g', state.g_opt), ('e', state.e_opt),
                            ('d', state.d_opt)):
            lr = tf.convert_to_tensor(opt.learning_rate.value)
            tf.summary.scalar(f'learning_rate/{name}', float(lr), step=step)
        writer.flush()
        last_log_time, last_log_step = now, step
      grid_now = (t.grid_every and step % t.grid_every == 0) or step == total
      # Read the flag once: a signal arriving after this point stops the
      # next loop call before its first step, never between the decision
      # and the save.
      stopping = stop.received or ('SIGTERM' if loop_stopped else None)
      save_now = (step % t.checkpoint_every == 0 or step == total
                  or stopping is not None)
      if grid_now or save_now:
        state.g_ema.copy_state()
        state.e_ema.copy_state()
      if grid_now and chief:
        write_grids(state, workdir, step, fixed_z, fixed_real, writer)
      if save_now and step != saved_step:
        last_checkpoint = save(step)
        saved_step = step
      if stopping is not None:
        stopped_by = stopping
        logging.warning('Received %s: saved %s at step %d; re-run the same '
                        'command to resume.', stopped_by,
                        last_checkpoint, step)
        break
  writer.flush()
  return {'step': step, 'metrics': metrics,
          'checkpoint': last_checkpoint, 'stopped_by': stopped_by,
          'abandoned_loop_call': abandoned, 'state': state}
