"""Export: a TF2 SavedModel with the DeepMind BigBiGAN TF Hub interface.

Writes, atomically, the SavedModel (signatures generate, encode, discriminate,
serving_default; TF Hub's Reusable SavedModel API for fine-tuning E), its
assets config.json and export_info.json, and native Keras 3 copies of the
networks in keras/*.keras (keras_export.py). The exported weights are the EMA
G and E by default, with recomputed standing batch-norm statistics.
docs/export.md is the user guide: signatures, shapes, errors, standing
statistics, overwrite rules and the file layout.
"""

import datetime
import functools
import json
import os
import tempfile
import uuid
from typing import Any, Optional

from absl import logging
import keras
import ml_collections
import tensorflow as tf

from bigbigan_tf import checkpoints
from bigbigan_tf import config_lib
from bigbigan_tf import defaults
from bigbigan_tf import keras_export
from bigbigan_tf import standing_stats

CONFIG_ASSET = 'config.json'
INFO_ASSET = 'export_info.json'
# What tf.saved_model.save writes into a module directory (with the assets),
# and the native Keras models.
_SAVED_MODEL_ENTRIES = frozenset({'saved_model.pb', 'variables', 'assets',
                                  'fingerprint.pb', keras_export.KERAS_DIR})


class OverwriteRefusedError(FileExistsError):
  """--overwrite was pointed at something that is not an exported module."""
SIGNATURE_NAMES = ('generate', 'encode', 'discriminate', 'serving_default')


def _shape_text(shape) -> str:
  return '[' + ', '.join('N' if d is None else str(d) for d in shape) + ']'


def _checked(t: tf.Tensor, spec: tf.TensorSpec, function: str,
             what: str) -> tf.Tensor:
  """Fails at run time, naming the expected shape, if `t` does not fit.

  The input's static shape is the signature's, so only run-time checks can
  catch a tensor whose shape was unknown to the caller's graph. The assert
  runs before anything reads `t` (a control dependency), so its message, not
  a later op's, is what the user sees.
  """
  message = (f'{function}: {spec.name} must be float32 '
             f'{_shape_text(spec.shape)}{what}; got shape')
  rank = len(spec.shape)
  shape = tf.shape(t)
  # Padded or cut to the expected rank, so that the comparison itself cannot
  # fail on a tensor of another rank (tf.cond would not help: grappler may
  # evaluate both branches).
  fitted = tf.concat([shape, tf.zeros([rank], tf.int32)], 0)[:rank]
  ok = tf.logical_and(
      tf.equal(tf.size(shape), rank),
      tf.reduce_all(tf.equal(fitted[1:], spec.shape[1:].as_list())))
  with tf.control_dependencies(
      [tf.debugging.Assert(ok, [message, shape], summarize=8)]):
    return tf.ensure_shape(t, spec.shape)


class _Networks:
  """A plain holder, so tf.Module does not track the Keras models."""

  def __init__(self, **networks):
    self.__dict__.update(networks)


def _variables_of(model: keras.Model):
  """A trackable holding a model's variables (all, and the trainable ones)."""
  holder = tf.__internal__.tracking.AutoTrackable()
  holder.variables = list(model.variables)
  holder.trainable_variables = list(model.trainable_variables)
  return holder


class BigBiGANModule(tf.Module):
  """The exported object: G, E and D with the Hub module's functions.

  Build it with float32 networks in inference-ready state (see `export`).
  As TF Hub's Reusable SavedModel API asks, `variables`,
  `trainable_variables` (E's only: what fine-tuning trains) and
  `regularization_losses` are saved attributes (plain lists here, not
  tf.Module's computed properties), so that e.g. hub.KerasLayer lists the
  module's weights; `__call__(x, training)` and `encode_train(x)` run E for
  fine-tuning (see the module docstring).
  """

  variables = None  # Instance lists; see the class docstring.
  trainable_variables = None

  def __init__(self, *, generator: keras.Model, encoder: keras.Model,
               discriminator: keras.Model,
               model_config: ml_collections.ConfigDict, step: int,
               use_ema: bool, standing_stats_batches: int):
    super().__init__(name='bigbigan')
    # The Keras models are used to trace the functions but not saved as
    # objects (saving a Keras 3 model object traces a default signature per
    # model, which fails for D's two inputs); their variables are saved, per
    # network, as `m.generator.variables` etc.
    self._networks = _Networks(generator=generator, encoder=encoder,
                                discriminator=discriminator)
    self.generator = _variables_of(generator)
    self.encoder = _variables_of(encoder)
    self.discriminator = _variables_of(discriminator)
    networks = (generator, encoder, discriminator)
    self.variables = [v for net in networks for v in net.variables]
    # Only E's: fine-tuning (hub.KerasLayer(trainable=True), TFSMLayer)
    # trains the encoder that `__call__` and `encode_train` run.
    self.trainable_variables = list(encoder.trainable_variables)
    self.regularization_losses = []
    self.step = tf.Variable(step, dtype=tf.int64, trainable=False,
                            name='step')
    self.use_ema = tf.Variable(use_ema, dtype=tf.bool, trainable=False,
                               name='use_ema')
    self.standing_stats_batches = tf.Variable(
        standing_stats_batches, dtype=tf.int64, trainable=False,
        name='standing_stats_batches')
    # z_dim and G's resolution from the built networks; E takes any size,
    # so its input side is the config's.
    z_dim, resolution = generator.z_dim, generator.resolution
    encoder_resolution = model_config.encoder_resolution
    self._z_dim = z_dim
    self._z_spec = tf.TensorSpec([None, z_dim], tf.float32, name='z')
    self._x_spec = tf.TensorSpec([None, resolution, resolution, 3],
                                 tf.float32, name='x')
    self._x_e_spec = tf.TensorSpec(
        [None, encoder_resolution, encoder_resolution, 3], tf.float32,
        name='x')
    function = functools.partial(tf.function, autograph=False)
    self.generate = function(self._generate, input_signature=[self._z_spec])
    self.encode = function(self._encode, input_signature=[self._x_e_spec])
    self.discriminate = function(
        self._discriminate, input_signature=[self._x_spec, self._z_spec])
    # Not an attribute: the signature alone, like the Hub module's default.
    self._serve = function(self._serving_default,
                           input_signature=[self._x_e_spec])
    # The Reusable SavedModel API: `training` is a Python bool, so both
    # traces are made here and saved (a loaded function cannot be retraced).
    self.__call__ = function(self._call)
    for training in (False, True):
      self.__call__.get_concrete_function(self._x_e_spec, training=training)
    self.encode_train = function(self._encode_train,
                                 input_signature=[self._x_e_spec])

  def _generate(self, z):
    z = _checked(z, self._z_spec, 'generate', '')
    images = self._networks.generator(z, training=False)
    upsampled = tf.repeat(tf.repeat(images, 2, axis=1), 2, axis=2)
    return {'default': images, 'upsampled': upsampled}

  def _encode(self, x):
    x = _checked(x, self._x_e_spec, 'encode', ' in [-1, 1]')
    noise = tf.random.normal([tf.shape(x)[0], self._z_dim])
    out = self._networks.encoder(x, training=False, noise=noise)
    return {'default': out['z_mean'], **out}

  def _call(self, x, training=False):
    """`encode` (training False) or `encode_train` (True), as a dict."""
    return self._encode_train(x) if training else self._encode(x)

  def _encode_train(self, x):
    """E in training mode: for fine-tuning, never in the signatures.

    Batch norm normalizes with batch statistics and updates the moving
    statistics that `encode` and the signatures read (in memory; the file is
    unchanged until saved again). `z_sample` draws fresh noise.
    """
    x = _checked(x, self._x_e_spec, 'encode_train', ' in [-1, 1]')
    noise = tf.random.normal([tf.shape(x)[0], self._z_dim])
    out = self._networks.encoder(x, training=True, noise=noise)
    return {'default': out['z_mean'], **out}

  def _discriminate(self, x, z):
    x = _checked(x, self._x_spec, 'discriminate', ' in [-1, 1]')
    z = _checked(z, self._z_spec, 'discriminate', '')
    batch_ok = tf.debugging.Assert(
        tf.equal(tf.shape(x)[0], tf.shape(z)[0]),
        ['discriminate: x and z must have the same batch size N; got',
         tf.shape(x)[0], 'and', tf.shape(z)[0]])
    with tf.control_dependencies([batch_ok]):
      x, z = tf.identity(x), tf.identity(z)
    return dict(self._networks.discriminator(x, z, training=False))

  def _serving_default(self, x):
    return {'default': self._encode(x)['z_mean']}

  def signatures(self) -> dict[str, Any]:
    """The concrete functions to save as signatures, by name."""
    return {
        'generate': self.generate.get_concrete_function(),
        'encode': self.encode.get_concrete_function(),
        'discriminate': self.discriminate.get_concrete_function(),
        'serving_default': self._serve.get_concrete_function(),
    }


def build_module(config: ml_collections.ConfigDict,
                 state: checkpoints.TrainState, *, step: int,
                 use_ema: bool = True,
                 standing_stats_batches: int = (
                     defaults.STANDING_STATS_BATCHES),
                 standing_stats_batch_size: int = (
                     defaults.STANDING_STATS_BATCH_SIZE)
                 ) -> tuple[BigBiGANModule, dict[str, Any]]:
  """Wraps a restored TrainState's networks as the exportable module.

  With `standing_stats_batches` > 0 this recomputes the batch-norm moving
  statistics of the chosen G and E in place (see the module docstring).

  Args:
    config: the run's config.
    state: a TrainState built with float32 weights (checkpoints.restore).
    step: the checkpoint's training step.
    use_ema: export the EMA G and E (True) or the live ones. D has no EMA.
    standing_stats_batches: batches for standing statistics; 0 keeps the
      checkpoint's moving statistics.
    standing_stats_batch_size: examples per standing-statistics batch.

  Returns:
    (module, info): info records the choices, for `assets/export_info.json`.
  """
  generator = state.ema_generator if use_ema else state.nets.generator
  encoder = state.ema_encoder if use_ema else state.nets.encoder
  stats = standing_stats.standing_statistics(
      config, generator, encoder, num_batches=standing_stats_batches,
      batch_size=standing_stats_batch_size)
  module = BigBiGANModule(
      generator=generator, encoder=encoder,
      discriminator=state.nets.discriminator, model_config=config.model,
      step=step, use_ema=use_ema,
      standing_stats_batches=standing_stats_batches)
  info = {'step': step, 'use_ema': use_ema,
          'batch_norm_statistics': stats,
          'signatures': list(SIGNATURE_NAMES),
          'exported_at': datetime.datetime.now(datetime.timezone.utc)
                         .isoformat(timespec='seconds'),
          'tensorflow': tf.__version__, 'keras': keras.__version__}
  return module, info


def _absolute(path: str) -> str:
  """A comparable form of a path: real absolute path, or the URL as given."""
  if '://' in path:
    return path.rstrip('/')
  return os.path.realpath(os.path.expanduser(path))


def _contains(parent: str, child: str) -> bool:
  """Whether `child` is `parent` or lies inside it (both _absolute)."""
  return child == parent or child.startswith(parent.rstrip('/') + '/')


def check_overwritable(export_dir: str, *,
                       workdir: Optional[str] = None) -> None:
  """Raises unless replacing `export_dir` can only delete an exported module.

  Deleting is allowed for a directory that does not exist, an empty
  directory, or a module this project exported: saved_model.pb,
  assets/config.json and assets/export_info.json (a JSON object with
  'use_ema'), and no entry a SavedModel does not have.

  Args:
    export_dir: the directory --overwrite would replace.
    workdir: the workdir being exported; it may be neither `export_dir` nor
      inside it.

  Raises:
    OverwriteRefusedError: saying what `export_dir` is and what to do.
  """
  target = _absolute(export_dir)

  def refuse(what: str):
    raise OverwriteRefusedError(
        f'Refusing to --overwrite {export_dir}: {what}. --overwrite only '
        'replaces a module written by export.py; nothing was deleted. Choose '
        'a new --export_dir (or delete the directory yourself if you are '
        'sure).')

  if workdir is not None and _contains(target, _absolute(workdir)):
    refuse(f'it is, or contains, the workdir {workdir} being exported')
  if '://' not in target:
    home = _absolute('~')
    cwd = os.path.realpath(os.getcwd())
    if _contains(target, home) or target == '/':
      refuse('it is the home directory, or a directory holding it')
    if _contains(target, cwd):
      refuse('it is the current directory, or a directory holding it')
  if not tf.io.gfile.exists(export_dir):
    return
  if not tf.io.gfile.isdir(export_dir):
    refuse('it is a file, not an exported module')
  entries = {e.rstrip('/') for e in tf.io.gfile.listdir(export_dir)}
  if not entries:
    return
  if (config_lib.CONFIG_FILENAME in entries
      or checkpoints.CHECKPOINT_DIR in entries):
    refuse('it is a training workdir (it holds '
           f'{config_lib.CONFIG_FILENAME} or {checkpoints.CHECKPOINT_DIR}/)')
  info_path = os.path.join(export_dir, 'assets', INFO_ASSET)
  info = None
  if ('saved_model.pb' in entries
      and tf.io.gfile.exists(os.path.join(export_dir, 'assets', CONFIG_ASSET))
      and tf.io.gfile.exists(info_path)):
    try:
      with tf.io.gfile.GFile(info_path) as f:
        info = json.load(f)
    except (ValueError, tf.errors.OpError):
      info = None
  if not isinstance(info, dict) or 'use_ema' not in info:
    listed = ', '.join(sorted(entries)[:5]) + (
        ', ...' if len(entries) > 5 else '')
    refuse(f'it is not a bigbigan-tf export (it holds {listed}; an export '
           f'holds saved_model.pb, assets/{CONFIG_ASSET} and '
           f'assets/{INFO_ASSET})')
  extra = sorted(entries - _SAVED_MODEL_ENTRIES)
  if extra:
    refuse(f'besides the module it holds {", ".join(extra[:5])}, which '
           '--overwrite would delete')


def _refuse_existing(export_dir: str, overwrite: bool, *,
                     workdir: Optional[str] = None) -> None:
  if overwrite:
    check_overwritable(export_dir, workdir=workdir)
  elif tf.io.gfile.exists(export_dir):
    raise FileExistsError(
        f'Export directory {export_dir} already exists; choose a new '
        '--export_dir, or pass --overwrite (overwrite=True) to replace it.')


def save_module(module: BigBiGANModule, export_dir: str, *,
                config: ml_collections.ConfigDict, info: dict[str, Any],
                overwrite: bool = False, keras_models: bool = True) -> str:
  """Writes `module` as a SavedModel at `export_dir`, atomically.

  The module is saved to a temporary sibling directory (`E.tmp-XXXXXXXX`),
  then renamed to `export_dir`; on failure the sibling is removed and
  `export_dir` is left as it was. With `keras_models` the networks are also
  written as keras/*.keras (keras_export.py) and info gets their layout
  under 'keras'. (On gs:// a directory rename copies object
  by object, so a reader could see a partly renamed module during the rename
  itself; a failed save still never touches `export_dir`. A killed process
  may leave the sibling behind.)

  Raises:
    FileExistsError: `export_dir` exists and `overwrite` is False.
    OverwriteRefusedError: `overwrite` is True but `export_dir` is not an
      exported module (`check_overwritable`).
  """
  export_dir = export_dir.rstrip('/')
  _refuse_existing(export_dir, overwrite, workdir=info.get('workdir'))
  parent = os.path.dirname(export_dir) or '.'
  tf.io.gfile.makedirs(parent)
  suffix = uuid.uuid4().hex[:8]
  tmp_dir = f'{export_dir}.tmp-{suffix}'
  old_dir = f'{export_dir}.old-{suffix}'
  if keras_models:
    info = {**info, 'keras': keras_export.layout_info()}
  with tempfile.TemporaryDirectory() as asset_dir:
    assets = {}
    for name, content in ((CONFIG_ASSET, config_lib.to_dict(config)),
                          (INFO_ASSET, info)):
      path = os.path.join(asset_dir, name)
      with open(path, 'w') as f:
        f.write(json.dumps(content, indent=2, sort_keys=True) + '\n')
      assets[name] = tf.saved_model.Asset(path)
    module.config_file = assets[CONFIG_ASSET]
    module.info_file = assets[INFO_ASSET]
    try:
      tf.saved_model.save(module, tmp_dir, signatures=module.signatures())
      if keras_models:
        keras_export.write_keras_models(
            vars(module._networks), tmp_dir)  # pylint: disable=protected-access
      replacing = tf.io.gfile.exists(export_dir)
      if replacing:
        # Moved aside, not deleted, until the new module is in place.
        tf.io.gfile.rename(export_dir, old_dir)
      tf.io.gfile.rename(tmp_dir, export_dir)
    except BaseException:
      if tf.io.gfile.exists(tmp_dir):
        tf.io.gfile.rmtree(tmp_dir)
      if tf.io.gfile.exists(old_dir) and not tf.io.gfile.exists(export_dir):
        tf.io.gfile.rename(old_dir, export_dir)
      raise
  if replacing:
    try:
      tf.io.gfile.rmtree(old_dir)
    except tf.errors.OpError as e:
      logging.warning('Exported %s, but could not delete the replaced module, '
                      'moved to %s: %s', export_dir, old_dir, e)
  return export_dir


def export(workdir: str, export_dir: str, *, checkpoint: Optional[str] = None,
           use_ema: bool = True, overwrite: bool = False,
           keras_models: bool = True,
           standing_stats_batches: int = (
               defaults.STANDING_STATS_BATCHES),
           standing_stats_batch_size: int = (
               defaults.STANDING_STATS_BATCH_SIZE)
           ) -> str:
  """Exports a checkpoint of a training run as a Hub-style SavedModel.

  Args:
    workdir: the training run's workdir (its config is read from there).
    export_dir: where the SavedModel goes (local or gs://).
    checkpoint: a checkpoint path (e.g. W/checkpoints/ckpt-500); default: the
      latest in the workdir.
    use_ema: export the EMA weights of G and E (default) or the live ones.
    overwrite: replace an existing `export_dir`, if it is an exported module.
    keras_models: also write keras/{encoder,generator,discriminator}.keras.
    standing_stats_batches: batches of standing statistics for G's and E's
      batch norms (0 = keep the checkpoint's moving statistics).
    standing_stats_batch_size: examples per standing-statistics batch.

  Returns:
    export_dir.

  Raises:
    FileNotFoundError: no config or no checkpoint in the workdir, or the
      given checkpoint does not exist.
    FileExistsError: `export_dir` exists and `overwrite` is False.
    OverwriteRefusedError: `overwrite` is True but `export_dir` is not an
      exported module (e.g. the workdir itself).
    checkpoints.WorkdirError: the workdir's config.json is corrupt.
    checkpoints.UnreadableCheckpointError: no checkpoint (or not the given
      one) can be read; a newer unreadable one is skipped with a warning.
    checkpoints.IncompleteCheckpointError: the checkpoint lacks some of the
      networks' variables.
    bigbigan_tf.data.DataError: standing statistics cannot read the training
      data (export with standing_stats_batches=0 instead).
  """
  _refuse_existing(export_dir.rstrip('/'), overwrite,
                   workdir=workdir)  # Before the slow part.
  # restore() builds the networks in float32 (the run may have trained in
  # mixed_bfloat16) and checks the checkpoint exists and is complete.
  config, state, checkpoint = checkpoints.restore(workdir,
                                                  checkpoint=checkpoint)
  step = int(state.step.numpy())
  checkpoints.check_checkpoint_complete(state, checkpoint, {
      'generator': state.ema_generator if use_ema else state.nets.generator,
      'encoder': state.ema_encoder if use_ema else state.nets.encoder,
      'discriminator': state.nets.discriminator})
  logging.info('Exporting %s (step %d, %s weights) to %s.', checkpoint,
               step, 'EMA' if use_ema else 'live', export_dir)
  module, info = build_module(
      config, state, step=step, use_ema=use_ema,
      standing_stats_batches=standing_stats_batches,
      standing_stats_batch_size=standing_stats_batch_size)
  info['checkpoint'] = checkpoint
  info['workdir'] = workdir
  return save_module(module, export_dir, config=config, info=info,
                     overwrite=overwrite, keras_models=keras_models)
