"""Checkpoints of a training run: what they hold, and how to read them back.

Workdir layout (train.py writes it; export and evaluation read it):
  config.json        the resolved config (written first; resuming checks it,
                     see `check_workdir_config`)
  checkpoints/       tf.train.CheckpointManager checkpoints (ckpt-STEP) of a
                     `TrainState`: G, E, D, the EMA G and E, the three Adam
                     optimizers, the step, the RNG (and, with
                     train.checkpoint_data_iterator, the data position)
  train/             TensorBoard summaries
  grids/             samples_STEP.png, reconstructions_STEP.png
  lease.json         who holds the workdir (the one training run allowed to
                     write it; bigbigan_tf/lease.py)

`restore` rebuilds a workdir's TrainState from a checkpoint in float32;
`check_checkpoint_complete` makes sure a checkpoint holds every variable of
the networks a caller is about to use.

Unreadable checkpoints (a truncated data file after a full disk or a partial
copy, a damaged index): `latest_readable` reads every tensor of the newest
checkpoint and, if that fails, warns naming the file and the reason and falls
back to the newest one that reads. Resume (train.py), export and evaluation
all go through it; nothing is deleted. Only when no checkpoint reads does it
raise `UnreadableCheckpointError`.
"""

import contextlib
import os
import re
import shutil
import tempfile
from typing import Optional

from absl import logging
import keras
import ml_collections
import tensorflow as tf

from bigbigan_tf import config_lib
from bigbigan_tf import defaults
from bigbigan_tf import ema as ema_lib
from bigbigan_tf import hardware
from bigbigan_tf import models
from bigbigan_tf import optimizers
from bigbigan_tf import precision
from bigbigan_tf import workdir_layout

CHECKPOINT_DIR = defaults.CHECKPOINT_DIR


class IncompleteCheckpointError(RuntimeError):
  """A checkpoint does not hold every variable of the state restored from it."""


class ConfigConflictError(ValueError):
  """The workdir was trained with a different config."""


class WorkdirError(ValueError):
  """The workdir cannot be used: not a directory, or its config.json is corrupt."""


class UnreadableCheckpointError(RuntimeError):
  """No checkpoint of a workdir (or not the one asked for) can be read."""


def load_config(workdir: str) -> ml_collections.ConfigDict:
  """config_lib.load, with a corrupt config.json as a WorkdirError.

  Raises:
    FileNotFoundError: the workdir holds no config.json.
    WorkdirError: the workdir is a file, or its config.json is not a JSON
      object (a truncated copy, an edit gone wrong).
  """
  check_workdir_is_directory(workdir)
  path = os.path.join(workdir, config_lib.CONFIG_FILENAME)
  try:
    config = config_lib.load(workdir)
  except (ValueError, AttributeError, TypeError) as e:
    # json.JSONDecodeError is a ValueError; a JSON list or number fails in
    # ConfigDict / setdefault with AttributeError or TypeError.
    raise WorkdirError(
        f'{path} is not a valid config ({type(e).__name__}: {e}). It is '
        'written by train.py; restore it from a copy, or, if you know the '
        'config the run was trained with, write it back with '
        'bigbigan_tf.config_lib.save(config, workdir). Nothing was '
        'changed.') from e
  return config


def check_workdir_is_directory(workdir: str) -> None:
  """Raises WorkdirError if `workdir` exists and is not a directory."""
  if tf.io.gfile.exists(workdir) and not tf.io.gfile.isdir(workdir):
    raise WorkdirError(
        f'--workdir={workdir} is a file, not a directory. Pass a directory '
        '(a new one to start a run, or the one train.py wrote to resume).')


class TrainState:
  """Everything a checkpoint holds: networks, EMA twins, optimizers, step, RNG.

  Build it inside `strategy.scope()`.
  """

  def __init__(self, config: ml_collections.ConfigDict):
    self.config = config
    # Initial values that follow config.seed alone, whatever other threads
    # (the lease's heartbeat) draw from Python's `random` meanwhile.
    with models.initial_values_from(config.seed):
      self.nets = models.build_networks(config.model)
      ema_nets = models.build_networks(config.model)
    self.ema_generator = ema_nets.generator
    self.ema_encoder = ema_nets.encoder
    self.g_ema = ema_lib.EMA(self.nets.generator, self.ema_generator)
    self.e_ema = ema_lib.EMA(self.nets.encoder, self.ema_encoder)
    self.g_ema.copy_all()
    self.e_ema.copy_all()
    o = config.optim

    def adam(lr, variables):
      opt = optimizers.Adam(learning_rate=lr, beta_1=o.beta1, beta_2=o.beta2,
                            epsilon=o.epsilon,
                            fused=hardware.switch(o.fused_adam,
                                                  'optim.fused_adam'))
      # Built here, in the strategy scope: a lazily built Adam fails on the
      # first distributed step.
      opt.build(variables)
      return opt

    self.g_vars = self.nets.generator.trainable_variables
    self.e_vars = self.nets.encoder.trainable_variables
    self.d_vars = self.nets.discriminator.trainable_variables
    self.g_opt = adam(o.g_lr, self.g_vars)
    self.e_opt = adam(o.e_lr, self.e_vars)
    self.d_opt = adam(o.d_lr, self.d_vars)
    self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name='step')
    self.rng = tf.random.Generator.from_seed(config.seed + 1)

  def checkpoint(self, **extra) -> tf.train.Checkpoint:
    return tf.train.Checkpoint(
        generator=self.nets.generator, encoder=self.nets.encoder,
        discriminator=self.nets.discriminator,
        ema_generator=self.ema_generator, ema_encoder=self.ema_encoder,
        g_optimizer=self.g_opt, e_optimizer=self.e_opt,
        d_optimizer=self.d_opt, step=self.step, rng=self.rng, **extra)


def _override_flag(field: str, value) -> str:
  """The --config.FIELD=VALUE flag that sets `field` back to `value`."""
  if isinstance(value, (list, tuple)):
    text = '(' + ','.join(str(v) for v in value) + (',' if len(value) == 1
                                                     else '') + ')'
    return f'"--config.{field}={text}"'
  return f'--config.{field}={value}'


def check_workdir_config(config: ml_collections.ConfigDict, workdir: str, *,
                         write: bool = True):
  """Writes the config into a new workdir; refuses a conflicting resume.

  Args:
    config: the config the run is about to train with.
    workdir: the run's workdir.
    write: False on the non-chief workers of a multi-worker run: they check
      the config like the chief but leave writing it to the chief.

  Raises:
    WorkdirError: `workdir` is a file, or its config.json is corrupt.
    ConfigConflictError: the workdir was trained with another config.
  """
  check_workdir_is_directory(workdir)
  path = os.path.join(workdir, config_lib.CONFIG_FILENAME)
  if tf.io.gfile.exists(path):
    old = load_config(workdir)
    differences = config_lib.diff(old, config)
    if differences:
      lines = '\n'.join(f'  {k}: {a!r} (workdir) != {b!r} (now)'
                        for k, a, b in differences)
      continue_flags = ' '.join(_override_flag(k, a)
                                for k, a, _ in differences if a is not None)
      raise ConfigConflictError(
          f'{workdir} was trained with a different config; resuming would '
          f'mix two experiments. Differing fields:\n{lines}\nUse a new '
          '--workdir, or pass the same config (only num_train_steps may '
          'change, to train longer); to continue this workdir as it was '
          f'trained, add: {continue_flags}')
  if write:
    config_lib.save(config, workdir)


def check_checkpoint_complete(state: TrainState, checkpoint: str,
                              networks: dict[str, keras.Model]) -> None:
  """Raises unless `checkpoint` restored every variable of `networks`.

  `restore` tolerates a partial match (a checkpoint also holds
  optimizer state and maybe a data iterator), so a variable missing from the
  checkpoint would silently keep its random initial value and be exported.
  Two ways that happens: the TrainState's checkpoint object does not reach
  the variable at all (tf.train.Checkpoint does not see Keras 3 layers held
  in Python lists unless they are listed explicitly), or the file was written
  without it.

  Raises:
    IncompleteCheckpointError: naming a few missing variables.
  """
  ckpt = state.checkpoint()
  reachable = {id(t) for t in tf.train.TrackableView(ckpt).descendants()}
  # `weights`, not `variables`: the encoder's noise SeedGenerator state is
  # deliberately not checkpointed (training passes its own noise; older
  # checkpoints lack it), so it is not asked for here.
  total = sum(len(net.weights) for net in networks.values())
  missing = [f'{name}:{v.path}' for name, net in networks.items()
             for v in net.weights if id(v) not in reachable]
  if missing:
    raise IncompleteCheckpointError(
        f'checkpoints.TrainState.checkpoint() does not reach {len(missing)} of '
        f'the {total} variables of the networks to export (e.g. '
        f'{", ".join(missing[:3])}), so {checkpoint} cannot hold them and the '
        'export would contain their random initial values. '
        'tf.train.Checkpoint does not see Keras 3 layers kept in Python lists '
        '(e.g. `self.blocks`); TrainState.checkpoint() must list every '
        "network's variables explicitly. Fix it, then train again.")
  # That the file holds every reachable variable, restore checks.


def _first_line(error: BaseException) -> str:
  text = str(error).strip()
  line = text.splitlines()[0] if text else ''
  line = line if len(line) <= 300 else line[:300] + ' ...'
  return f'{type(error).__name__}: {line}' if line else type(error).__name__


def checkpoint_problem(checkpoint: str) -> Optional[str]:
  """Why `checkpoint` (a path prefix like W/checkpoints/ckpt-6) cannot be read.

  Opens the index and reads every tensor it lists from the data files, as a
  restore would (this reads the whole checkpoint once).

  Returns:
    None if it reads, else a sentence naming the damaged file and the error.
  """
  index = checkpoint + '.index'
  if not tf.io.gfile.exists(index):
    return f'{index} does not exist'
  try:
    reader = tf.train.load_checkpoint(checkpoint)
    names = sorted(reader.get_variable_to_shape_map())
    dtypes = reader.get_variable_to_dtype_map()
  except Exception as e:  # pylint: disable=broad-except
    # Damaged indexes fail with DataLossError, OpError or ValueError,
    # depending on where the bytes went missing.
    return f'its index {index} cannot be read ({_first_line(e)})'
  data = ', '.join(sorted(tf.io.gfile.glob(checkpoint + '.data-*'))) or (
      f'{checkpoint}.data-* (missing)')
  for name in names:
    try:
      if dtypes[name] == tf.variant:
        # A stored data-iterator position: no numpy form, so read it as the
        # restore op does.
        tf.raw_ops.RestoreV2(prefix=checkpoint, tensor_names=[name],
                             shape_and_slices=[''], dtypes=[tf.variant])
      else:
        reader.get_tensor(name)
    except Exception as e:  # pylint: disable=broad-except
      # A truncated data file raises IndexError ('Read less bytes than
      # requested'); a missing or corrupt one OpErrors.
      return (f'its data file {data} cannot be read (tensor {name}: '
              f'{_first_line(e)})')
  return None


def _step_of(path: str) -> int:
  match = re.search(r'-(\d+)$', path)
  return int(match.group(1)) if match else -1


def checkpoint_paths(directory: str) -> list[str]:
  """Every checkpoint prefix in `directory`, newest (highest step) first.

  The CheckpointManager's state file lists them; checkpoints it lost track
  of (or a damaged state file) are found by their .index files.
  """
  paths = set()
  try:
    state = tf.train.get_checkpoint_state(directory)
  except Exception as e:  # pylint: disable=broad-except
    logging.warning('The checkpoint state file in %s cannot be read (%s); '
                    'looking for ckpt-*.index files instead.', directory,
                    _first_line(e))
    state = None
  if state is not None:
    # get_checkpoint_state has already joined relative entries to
    # `directory` (joining again doubled a relative workdir's paths).
    paths.update(state.all_model_checkpoint_paths)
  for index in tf.io.gfile.glob(os.path.join(directory, 'ckpt-*.index')):
    paths.add(index[:-len('.index')])
  paths = {os.path.normpath(p) if '://' not in p else p for p in paths}
  return sorted(paths, key=_step_of, reverse=True)


def latest_readable(directory: str) -> Optional[str]:
  """The newest checkpoint in `directory` that reads in full, or None if none.

  Every unreadable newer one is logged as a warning naming the file and the
  reason; nothing is deleted.

  Raises:
    UnreadableCheckpointError: there are checkpoints, but none reads.
  """
  paths = checkpoint_paths(directory)
  problems = []
  for path in paths:
    problem = checkpoint_problem(path)
    if problem is None:
      if problems:
        logging.warning('Using %s, the newest readable checkpoint in %s.',
                        path, directory)
      return path
    logging.warning('Checkpoint %s is unreadable, skipping it (kept on '
                    'disk): %s.', path, problem)
    problems.append(f'  {path}: {problem}')
  if problems:
    raise UnreadableCheckpointError(
        f'No checkpoint in {directory} can be read:\n' + '\n'.join(problems) +
        '\nRestore the files from a copy, or start again in a new --workdir. '
        'Nothing was deleted.')
  return None


def find_checkpoint(workdir: str, checkpoint: Optional[str] = None, *,
                    otherwise: str = '') -> str:
  """The checkpoint to read: `checkpoint`, else the newest readable one.

  Args:
    workdir: the directory train.py wrote to.
    checkpoint: a checkpoint path (W/checkpoints/ckpt-STEP), or None.
    otherwise: what else the caller could be given, added to the message
      when the workdir has no checkpoint (e.g. ' or pass --module=DIR').

  Returns:
    The checkpoint path (its prefix, without `.index`).

  Raises:
    FileNotFoundError: `checkpoint` does not exist, or (with None) the
      workdir holds no checkpoint.
    UnreadableCheckpointError: the given checkpoint, or every checkpoint of
      the workdir, cannot be read (newer unreadable ones are skipped with a
      warning, `latest_readable`).
  """
  ckpt_dir = os.path.join(workdir, CHECKPOINT_DIR)
  if checkpoint is not None:
    if not tf.io.gfile.exists(checkpoint + '.index'):
      raise FileNotFoundError(
          f'Checkpoint {checkpoint} does not exist (no {checkpoint}.index). '
          f'Pass a path like {ckpt_dir}/ckpt-STEP, or omit it to use the '
          'latest checkpoint.')
    problem = checkpoint_problem(checkpoint)
    if problem is not None:
      raise UnreadableCheckpointError(
          f'Checkpoint {checkpoint} cannot be read: {problem}. Pass another '
          'checkpoint, or omit it to use the newest readable one.')
    return checkpoint
  latest = latest_readable(ckpt_dir)
  if latest is None:
    raise FileNotFoundError(
        f'No checkpoint in {ckpt_dir}; train first: python train.py '
        f'--workdir={workdir}{otherwise}')
  return latest


def _is_remote(path: str) -> bool:
  return '://' in path and not path.startswith('file://')


@contextlib.contextmanager
def staged_locally(checkpoint: str):
  """Yields `checkpoint` when it is local, else a local copy's prefix.

  TensorFlow 2.21's RestoreV2 gives every tensor a reader of its own when
  TensorFlow runs on one inter-op thread (eval/evaluate.py --watch's default,
  --threads=1): on gs:// each tensor then re-reads the index, and the data
  file from its offset to the end. Against the GCS emulator the tiny
  config's restore took 168 s that way instead of 12 s. One sequential copy
  of the checkpoint's files (as large as the checkpoint, in the system's
  temporary directory, removed after) costs what a single read does.

  Raises:
    UnreadableCheckpointError: the files could not be copied.
  """
  if not _is_remote(checkpoint):
    yield checkpoint
    return
  local_dir = tempfile.mkdtemp(prefix='bigbigan-restore-')
  try:
    names = tf.io.gfile.glob(checkpoint + '.*')
    for name in names:
      tf.io.gfile.copy(name, os.path.join(local_dir, os.path.basename(name)),
                       overwrite=True)
  except (tf.errors.OpError, OSError) as e:
    shutil.rmtree(local_dir, ignore_errors=True)
    raise UnreadableCheckpointError(
        f'Could not copy {checkpoint} to {local_dir} to restore it: '
        f'{str(e).splitlines()[0] if str(e) else type(e).__name__}') from e
  try:
    yield os.path.join(local_dir, os.path.basename(checkpoint))
  finally:
    shutil.rmtree(local_dir, ignore_errors=True)


def restore(workdir: str, *, checkpoint: Optional[str] = None
            ) -> tuple[ml_collections.ConfigDict, TrainState, str]:
  """Rebuilds the TrainState of a workdir from a checkpoint (latest default).

  The networks are built in float32 whatever precision the run trained in
  (checkpointed weights are float32): this is the state export and evaluation
  compute with.

  Returns:
    (config, state, checkpoint path).

  With no `checkpoint`, the latest readable one is used: a newer unreadable
  one is skipped with a warning (`latest_readable`).

  Raises:
    FileNotFoundError: the workdir has no config or no checkpoint.
    WorkdirError: the workdir's config.json is corrupt.
    UnreadableCheckpointError: the given checkpoint, or every checkpoint of
      the workdir, cannot be read.
    IncompleteCheckpointError: the checkpoint lacks some of the state.
  """
  config = load_config(workdir)
  checkpoint = find_checkpoint(workdir, checkpoint)
  with precision.dtype_policy('float32'):
    state = TrainState(config)
  # Every object of the state must be in the checkpoint (extra entries, such
  # as a stored data position, may be left unused).
  with staged_locally(checkpoint) as local:
    status = state.checkpoint().restore(local)
    status.expect_partial()
    try:
      status.assert_existing_objects_matched()
    except AssertionError as e:
      raise IncompleteCheckpointError(
          f'{checkpoint} does not hold every variable of the current '
          'TrainState (written by an older bigbigan-tf, or not by '
          'train.py?); using it would leave the missing ones at their random '
          'initial values. '
          f'Details: {str(e)[:500]}') from e
  return config, state, checkpoint


def remove_stale_temps(directory: str) -> list[str]:
  """Deletes `*_temp` directories a save left behind in `directory`.

  tf.train.CheckpointManager writes ckpt-STEP_temp/ first and moves it into
  place when the save is complete; a full disk, or a SIGKILL, during the save
  leaves it. Call only while holding the workdir's lease (no save can be
  under way). Each removal is logged.

  Returns:
    The removed directories.
  """
  removed = []
  if not tf.io.gfile.isdir(directory):
    return removed
  for temp in sorted(tf.io.gfile.glob(os.path.join(directory, '*_temp'))):
    if tf.io.gfile.isdir(temp):
      tf.io.gfile.rmtree(temp)
      logging.warning('Removed %s, the unfinished part of a checkpoint save '
                      'that did not complete (a full disk, or the process '
                      'killed during the save).', temp)
      removed.append(temp)
  return removed


def log_resume_changes(config: ml_collections.ConfigDict,
                       workdir: str) -> None:
  """Logs every resumable field this run changes (config_lib.RESUMABLE_FIELDS).

  The speed switches and the precision are left to W/hardware.json's record;
  the others (num_train_steps, optim.grad_accum_steps, ...) are logged here.
  """
  if not tf.io.gfile.exists(os.path.join(workdir, config_lib.CONFIG_FILENAME)):
    return
  old = load_config(workdir)
  logged = [f for f in config_lib.RESUMABLE_FIELDS
            if f not in hardware.SWITCHES and f != 'train.precision']
  for field, before, now in config_lib.diff(old, config, ignore=()):
    if field in logged:
      logging.info('Resuming %s with %s = %r (it was %r).', workdir, field,
                   now, before)


def resolve_checkpoint(workdir: str, checkpoint: Optional[str]) -> Optional[str]:
  """`checkpoint`, with 'best' turned into the kept best (W/best/) prefix.

  Read through the pointer W/best/best.json only (`workdir_layout`), which
  the evaluator moves last, after the copy it names is complete.

  Raises:
    FileNotFoundError: 'best' was asked for and W/best does not exist yet.
  """
  if checkpoint != 'best':
    return checkpoint
  return workdir_layout.best_checkpoint(workdir)
