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

`restore` rebuilds a workdir's TrainState from a checkpoint in float32;
`check_checkpoint_complete` makes sure a checkpoint holds every variable of
the networks a caller is about to use.
"""

import os
from typing import Optional

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

CHECKPOINT_DIR = defaults.CHECKPOINT_DIR


class IncompleteCheckpointError(RuntimeError):
  """A checkpoint does not hold every variable of the state restored from it."""


class ConfigConflictError(ValueError):
  """The workdir was trained with a different config."""


class TrainState:
  """Everything a checkpoint holds: networks, EMA twins, optimizers, step, RNG.

  Build it inside `strategy.scope()`.
  """

  def __init__(self, config: ml_collections.ConfigDict):
    self.config = config
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


def check_workdir_config(config: ml_collections.ConfigDict, workdir: str):
  """Writes the config into a new workdir; refuses a conflicting resume."""
  path = os.path.join(workdir, config_lib.CONFIG_FILENAME)
  if tf.io.gfile.exists(path):
    old = config_lib.load(workdir)
    differences = config_lib.diff(old, config)
    if differences:
      lines = '\n'.join(f'  {k}: {a!r} (workdir) != {b!r} (now)'
                        for k, a, b in differences)
      raise ConfigConflictError(
          f'{workdir} was trained with a different config; resuming would '
          f'mix two experiments. Differing fields:\n{lines}\nUse a new '
          '--workdir, or pass the same config (only num_train_steps may '
          'change, to train longer).')
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
  total = sum(len(net.variables) for net in networks.values())
  missing = [f'{name}:{v.path}' for name, net in networks.items()
             for v in net.variables if id(v) not in reachable]
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


def find_checkpoint(workdir: str, checkpoint: Optional[str] = None, *,
                    otherwise: str = '') -> str:
  """The checkpoint to read: `checkpoint`, else the latest one of `workdir`.

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
  """
  ckpt_dir = os.path.join(workdir, CHECKPOINT_DIR)
  if checkpoint is not None:
    if not tf.io.gfile.exists(checkpoint + '.index'):
      raise FileNotFoundError(
          f'Checkpoint {checkpoint} does not exist (no {checkpoint}.index). '
          f'Pass a path like {ckpt_dir}/ckpt-STEP, or omit it to use the '
          'latest checkpoint.')
    return checkpoint
  latest = tf.train.latest_checkpoint(ckpt_dir)
  if latest is None:
    raise FileNotFoundError(
        f'No checkpoint in {ckpt_dir}; train first: python train.py '
        f'--workdir={workdir}{otherwise}')
  return latest


def restore(workdir: str, *, checkpoint: Optional[str] = None
            ) -> tuple[ml_collections.ConfigDict, TrainState, str]:
  """Rebuilds the TrainState of a workdir from a checkpoint (latest default).

  The networks are built in float32 whatever precision the run trained in
  (checkpointed weights are float32): this is the state export and evaluation
  compute with.

  Returns:
    (config, state, checkpoint path).

  Raises:
    FileNotFoundError: the workdir has no config or no checkpoint.
    IncompleteCheckpointError: the checkpoint lacks some of the state.
  """
  config = config_lib.load(workdir)
  checkpoint = find_checkpoint(workdir, checkpoint)
  with precision.dtype_policy('float32'):
    state = TrainState(config)
  # Every object of the state must be in the checkpoint (extra entries, such
  # as a stored data position, may be left unused).
  status = state.checkpoint().restore(checkpoint)
  status.expect_partial()
  try:
    status.assert_existing_objects_matched()
  except AssertionError as e:
    raise IncompleteCheckpointError(
        f'{checkpoint} does not hold every variable of the current TrainState '
        '(written by an older bigbigan-tf, or not by train.py?); using it '
        'would leave the missing ones at their random initial values. '
        f'Details: {str(e)[:500]}') from e
  return config, state, checkpoint
