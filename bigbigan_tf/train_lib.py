"""BigBiGAN's training loop: D steps and E/G steps under a tf.distribute strategy.

`train_and_evaluate` sets up a run (config guard, 'auto' choices, networks,
restore from the newest readable checkpoint, chief-only writers) and drives the
compiled loop of `bigbigan_tf.trainer.Trainer`, leaving it only to log, write
grids and checkpoint. Signals are answered inside a loop call
(`bigbigan_tf.preemption`).

The workdir layout, the checkpointed `TrainState` and `restore` live in
`bigbigan_tf.checkpoints`.
"""

import contextlib
import os
import sys
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
from bigbigan_tf import lease
from bigbigan_tf import monitoring
from bigbigan_tf import precision
from bigbigan_tf import preemption
from bigbigan_tf import trainer as trainer_lib
from bigbigan_tf import write_faults
from bigbigan_tf.evaluation.in_process import InProcessEvaluation
from bigbigan_tf.models import ops

class NonFiniteLossError(RuntimeError):
  """A loss became NaN or infinite; the last good checkpoint is kept."""


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
                                 state.ema_generator.resolution).numpy()
  paths = {}
  for name, grid in grids.sample_and_reconstruction_grids(
      samples, real_small, recon, cols=cols).items():
    paths[name] = os.path.join(workdir, 'grids', f'{name}_{step:08d}.png')
    grids.write_png(paths[name], grid)
    if writer is not None:
      with writer.as_default():
        tf.summary.image(name, grid[None], step=step)
  return paths


def _format_eta(seconds: float) -> str:
  seconds = int(seconds)
  return f'{seconds // 3600}h{seconds % 3600 // 60:02d}m{seconds % 60:02d}s'


def _exit_on_lost(error: lease.LeaseLostError) -> None:
  """Lease lost: stop at once, writing nothing more (a save cut short leaves
  *_temp, which the next holder removes)."""
  logging.error('%s', error)
  logging.flush()
  print(f'error: {error}', file=sys.stderr, flush=True)
  os._exit(2)  # pylint: disable=protected-access


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *,
                       strategy: Optional[tf.distribute.Strategy] = None,
                       on_lost=_exit_on_lost) -> dict[str, Any]:
  """Trains (or resumes) BigBiGAN in `workdir` up to `config.num_train_steps`.

  Args:
    config: a full config (configs/base.py).
    workdir: where config, checkpoints, summaries and grids go (gs:// works).
    strategy: a tf.distribute strategy; None = the default (one device).
    on_lost: called once if the chief loses the workdir's lease (gcs mode;
      from the heartbeat, or the check before a write that found it); the
      default prints one line and exits 2.

  Returns:
    {'step': final step, 'metrics': the last logged metrics (floats),
     'checkpoint': path of the last checkpoint, 'stopped_by': signal or None,
     'abandoned_loop_call': True when a signal came before any step since the
     last checkpoint (e.g. during tracing): the loop call still runs in a
     daemon thread and the process should exit at once (train.py does),
     'state': the TrainState}.

  Raises:
    ConfigError / checkpoints.ConfigConflictError / DataError /
      checkpoints.WorkdirError / checkpoints.UnreadableCheckpointError /
      hardware.HardwareError: before training starts.
    lease.LeaseError: another run holds the workdir (LeaseHeldError; under
      multi-worker, refused the chief: nothing written), no mutual exclusion
      on the workdir (flock unsupported, another scheme than gs://), or the
      lease was lost (LeaseLostError: no write started since).
    NonFiniteLossError: a loss became NaN/inf (last good checkpoint kept).
  """
  strategy = strategy or tf.distribute.get_strategy()
  config_lib.validate(config, num_replicas=strategy.num_replicas_in_sync)
  # config.eval's metrics, checked before anything is written.
  InProcessEvaluation(config, workdir, chief=False)
  # 'auto' precision and speed switches, settled for this machine before
  # anything is written (a bad ONEDNN_MAX_CPU_ISA raises HardwareError); the
  # workdir keeps the config as given, and W/hardware.json what it became.
  resolution = hardware.resolve(config)
  # One writer per workdir: the chief holds the lease (bigbigan_tf/lease.py)
  # before it writes anything, for the whole run; the other workers of a
  # multi-worker run take part in the chief's run and take none.
  checkpoints.check_workdir_is_directory(workdir)
  chief = distribute.is_chief(strategy)
  with contextlib.ExitStack() as stack:
    holder, refused = lease.Holder({}, 'none'), None
    if chief:
      try:
        mode, why = lease.resolve_mode(workdir, config.train.lease)
        logging.info('train.lease %s -> %s (%s).', config.train.lease, mode,
                     why)
        holder = stack.enter_context(lease.hold(
            workdir, expiry_s=config.train.lease_expiry_s,
            mode=config.train.lease, on_lost=on_lost))
      except lease.LeaseError as e:
        refused = e
    # Other workers touch the workdir only once their chief holds it.
    distribute.wait_for_chief(strategy, refused, workdir)
    return _set_up_and_train(config, workdir, strategy, resolution, holder)


def _set_up_and_train(config, workdir, strategy, resolution, holder):
  holder.check()
  if distribute.is_chief(strategy):
    # A save cut short (a full disk, a SIGKILL) leaves ckpt-STEP_temp/.
    checkpoints.remove_stale_temps(
        os.path.join(workdir, checkpoints.CHECKPOINT_DIR))
  checkpoints.log_resume_changes(config, workdir)
  # Every worker checks the config; the chief alone writes it.
  checkpoints.check_workdir_config(config, workdir,
                                   write=distribute.is_chief(strategy))
  for line in resolution.log_lines():
    logging.info('%s', line)
  config = resolution.config
  if config.train.deterministic:
    tf.config.experimental.enable_op_determinism()
  keras.utils.set_random_seed(config.seed)
  with precision.dtype_policy(config.train.precision):
    return _Run(config, workdir, strategy, resolution, holder).loop()


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


def _log(state, writer, out, *, step, total, ips, eta, collapse, checkpoint,
         images):
  """One log step: the line, collapse warnings and TensorBoard scalars.

  `images` (the chief's fixed held-out batch, None elsewhere) feed the
  encoder's noise signals, computed here rather than in the compiled step.
  """
  logging.info('step %d/%d (%.1f%%): d_loss %.4f, eg_loss %.4f, '
               '%.1f images/s, ETA %s', step, total, 100 * step / total,
               out['d_loss'], out['eg_loss'], ips, _format_eta(eta))
  svs = monitoring.singular_values(
      {'generator': state.nets.generator,
       'discriminator': state.nets.discriminator})
  for alarm in collapse.update(step, monitoring.collapse_signals(out, svs)):
    logging.warning('%s', monitoring.describe(alarm, checkpoint=checkpoint))
  scalars = dict(out)
  scalars.update(monitoring.summary_scalars(svs))
  scalars['images_per_second'] = ips
  if images is not None:
    scalars.update(monitoring.encoder_noise(state.nets.encoder, images))
  for name, opt in (('g', state.g_opt), ('e', state.e_opt),
                    ('d', state.d_opt)):
    lr = tf.convert_to_tensor(opt.learning_rate.value)
    scalars[f'learning_rate/{name}'] = float(lr)
  with writer.as_default():
    for k, v in scalars.items():
      tf.summary.scalar(k, v, step=step)
  writer.flush()


class _Run:
  """One call of the training loop, in pieces with one concern each.

  `__init__` and `_restore` set up (state, data, checkpoint manager, resume),
  `_call` runs the compiled loop to the next boundary, `_after_call` checks
  and logs its outputs, `_save_and_evaluate` writes grids and checkpoints and
  runs the in-process evaluation, and `loop` strings them together.
  """

  def __init__(self, config, workdir, strategy, resolution, holder):
    t = self.t = config.train
    # Before every write (a run resumed from SIGSTOP may wake before its
    # lease's heartbeat): raises lease.LeaseLostError once it is lost.
    # check() asks the local clock and the heartbeat; verify(), before each
    # checkpoint save, asks the store too (gcs mode).
    self.check_lease, self.verify_lease = holder.check, holder.verify
    self.config, self.workdir, self.strategy = config, workdir, strategy
    self.chief = chief = distribute.is_chief(strategy)
    # Checks config.eval's metrics before any work.
    self.in_process_eval = InProcessEvaluation(config, workdir, chief=chief)
    self.checkpoint_dir = os.path.join(workdir, checkpoints.CHECKPOINT_DIR)
    # Non-chiefs save into a temporary directory, deleted after each save.
    self.write_dir = distribute.worker_write_dir(self.checkpoint_dir,
                                                 strategy)
    distribute.remove_worker_dir(self.write_dir, strategy)  # A crashed run's.
    # Read before building the state: under MultiWorkerMirroredStrategy,
    # creating the variables waits for every worker, so the chief cannot
    # have appended this run's entry yet.
    hardware_snapshot = None if chief else _hardware_snapshot(workdir)
    with strategy.scope():
      self.state = checkpoints.TrainState(config)
    self.iterator = _data_iterator(config, strategy, seed=config.seed)
    self._restore()
    self.step = int(self.state.step.numpy())
    self.check_lease()  # W/hardware.json is written next
    changed = _record_hardware(resolution, workdir, self.step, strategy,
                               hardware_snapshot)
    if changed:
      logging.warning('%s', changed)
      if not t.checkpoint_data_iterator:
        # Without a stored position, restart the stream on a new seed so a
        # resumed run does not replay the first batches.
        self.iterator = _data_iterator(config, strategy,
                                       seed=config.seed + self.step)
    self.trainer = trainer_lib.Trainer(self.state, strategy)
    # Summaries and grids: the chief's alone (no doubled curves).
    self.writer = (
        tf.summary.create_file_writer(os.path.join(workdir, 'train'))
        if chief else tf.summary.create_noop_writer())
    grid_n = t.grid_size * t.grid_size
    self.fixed_z, self.fixed_real = (_fixed_inputs(config, grid_n) if chief
                                     else (None, None))
    self.total = config.num_train_steps
    self.metrics, self.stopped_by, self.abandoned = {}, None, False
    self.collapse = monitoring.CollapseDetector()
    # Evaluation time, kept out of images/s and the ETA.
    self.eval_seconds = self.eval_seconds_total = 0.0

  def _restore(self):
    """The checkpoint manager, and the resume from the newest readable one."""
    extra = ({'data_iterator': self.iterator}
             if self.t.checkpoint_data_iterator else {})
    ckpt = self.state.checkpoint(**extra)
    self.manager = tf.train.CheckpointManager(
        ckpt, self.write_dir, max_to_keep=self.t.keep_checkpoints,
        step_counter=self.state.step)
    # Every worker resumes from the chief's newest readable checkpoint (an
    # unreadable newer one is skipped with a warning).
    self.resumed_from = checkpoints.latest_readable(self.checkpoint_dir)
    self.last_checkpoint = self.resumed_from
    if self.resumed_from:
      ckpt.restore(self.resumed_from).assert_existing_objects_matched()
      logging.info('Resumed from %s (step %d).', self.resumed_from,
                   int(self.state.step.numpy()))

  def save(self, step: int) -> str:
    """Saves on every worker; returns the chief's checkpoint path."""
    with self._writing(self.write_dir, verify=True):
      path = self.manager.save(checkpoint_number=step)
    distribute.remove_worker_dir(self.write_dir, self.strategy)
    self.last_checkpoint = os.path.join(self.checkpoint_dir,
                                        os.path.basename(path))
    self.saved_step = step
    return self.last_checkpoint

  def loop(self):
    """Trains from the restored step to num_train_steps or a signal."""
    self.saved_step = self.step
    if self.step == 0 and not self.resumed_from:
      self.save(0)
      if self.total == 0 and self.chief:
        self._write_grids(0)
    self.start_step, self.start_time = self.step, time.time()
    self.last_log_time, self.last_log_step = self.start_time, self.step
    first_call = True
    with preemption.StopSignal() as stop:
      while self.step < self.total:
        out = self._call(stop, first_call)
        first_call = False
        if out is None:  # a signal, and nothing new since the last save
          self.stopped_by, self.abandoned = stop.received, True
          logging.warning('Received %s with no step done since %s: nothing '
                          'new to save; exiting. Re-run the same command to '
                          'resume.', self.stopped_by, self.last_checkpoint)
          break
        loop_stopped = self._after_call(out)
        # Read the flag once: a signal arriving after this point stops the
        # next loop call before its first step, never between the decision
        # and the save.
        stopping = stop.received or ('SIGTERM' if loop_stopped else None)
        self._save_and_evaluate(stopping)
        if stopping is not None:
          self.stopped_by = stopping
          logging.warning('Received %s: saved %s at step %d; re-run the '
                          'same command to resume.', stopping,
                          self.last_checkpoint, self.step)
          break
    with self._writing(os.path.join(self.workdir, 'train')):
      self.writer.flush()
    return {'step': self.step, 'metrics': self.metrics,
            'checkpoint': self.last_checkpoint,
            'stopped_by': self.stopped_by,
            'abandoned_loop_call': self.abandoned, 'state': self.state}

  def _call(self, stop, first_call: bool):
    """Runs the compiled loop to the next log, save, grid or loop boundary."""
    t, step = self.t, self.step
    boundaries = [self.total, step + t.steps_per_loop]
    for every in (t.log_every, t.checkpoint_every, t.grid_every):
      if every:
        boundaries.append((step // every + 1) * every)
    if first_call:
      logging.info('Training from step %d: tracing and compiling the loop.',
                   step)

    def log_compiled(seconds):
      logging.info('The training loop is compiled and running: first step '
                   'done %.1f s after the first call.', seconds)

    return stop.call(self.trainer, self.iterator, min(boundaries) - step,
                     unsaved_steps=step - self.saved_step,
                     on_first_step=log_compiled if first_call else None)

  def _after_call(self, out) -> bool:
    """Advances the step, checks the losses and logs; True if stopped.

    Raises:
      NonFiniteLossError: a loss is NaN or infinite.
    """
    steps_run = out.pop('steps_run')
    # Under multi-worker, another worker's signal stops this one too.
    loop_stopped = out.pop('stopped')
    self.step += steps_run
    step, total = self.step, self.total
    bad = {k: v for k, v in out.items() if steps_run and not np.isfinite(v)}
    if bad:
      raise NonFiniteLossError(
          f'Non-finite loss at step {step}: ' + ', '.join(
              f'{k} = {v}' for k, v in sorted(bad.items())) +
          f'. The last good checkpoint, {self.last_checkpoint}, is '
          'kept; lower the learning rates or use float32, then resume.')
    if steps_run:
      self.metrics = out
    if steps_run and (step % self.t.log_every == 0 or step == total):
      now = time.time()
      ips = (step - self.last_log_step) * self.config.batch_size / max(
          now - self.last_log_time - self.eval_seconds, 1e-9)
      eta = (total - step) * (
          now - self.start_time - self.eval_seconds_total) / max(
              step - self.start_step, 1)
      with self._writing(os.path.join(self.workdir, 'train')):
        _log(self.state, self.writer, out, step=step, total=total, ips=ips,
             eta=eta, collapse=self.collapse,
             checkpoint=self.last_checkpoint, images=self.fixed_real)
      self.last_log_time, self.last_log_step = now, step
      self.eval_seconds = 0.0
    return loop_stopped

  def _save_and_evaluate(self, stopping: Optional[str]) -> None:
    """Grids, the checkpoint and the in-process evaluation, when due."""
    t, step, total = self.t, self.step, self.total
    grid_now = (t.grid_every and step % t.grid_every == 0) or step == total
    save_now = (step % t.checkpoint_every == 0 or step == total
                or stopping is not None)
    if grid_now or save_now:
      self.state.g_ema.copy_state()
      self.state.e_ema.copy_state()
    if grid_now and self.chief:
      self._write_grids(step)
    if save_now and step != self.saved_step:
      self.save(step)
      if self.in_process_eval.due(step, total) and stopping is None:
        self.check_lease()
        seconds = self.in_process_eval(self.last_checkpoint, step)
        self.eval_seconds += seconds
        self.eval_seconds_total += seconds

  @contextlib.contextmanager
  def _writing(self, path: str, *, verify: bool = False):
    """A write to `path`: only while the lease holds; storage errors name it.

    `verify`: ask the store whether the lease is still this run's (a
    checkpoint save); else the local clock and the heartbeat's verdict.
    """
    (self.verify_lease if verify else self.check_lease)()
    with write_faults.writing(path):
      yield

  def _write_grids(self, step: int) -> None:
    self.check_lease()  # PNGs are written through files.write_atomic
    write_grids(self.state, self.workdir, step, self.fixed_z, self.fixed_real,
                self.writer)
