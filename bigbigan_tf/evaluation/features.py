"""E and G for evaluation, from a workdir checkpoint or an exported module.

`Networks` puts the two sources behind one interface:

  nets = load_from_workdir(W)          # EMA G and E of W's latest checkpoint
  nets = load_from_module(EXPORT_DIR)  # any SavedModel with the Hub interface
  nets.generate(z)   # z float32 [N, z_dim] -> images [N, R, R, 3] in [-1, 1]
  nets.encode(x)     # x [N, R_E, R_E, 3] in [-1, 1] -> {'z_mean', ...}

The module path only uses the `encode` / `generate` signatures (see
bigbigan_tf/export_lib.py; `module.signatures['encode'](x=...)`), so it works
with modules written by `export.py` and with DeepMind's official BigBiGAN TF
Hub modules.
Both run inference-mode networks: an example's outputs do not depend on its
batch.

The helpers below stream latents, generated images and real images in
batches, so that 50,000 samples never sit in memory as images.
"""

import json
import os
from typing import Dict, Iterator, Optional, Tuple

from absl import logging
import ml_collections
import numpy as np
import tensorflow as tf

from bigbigan_tf import checkpoints
from bigbigan_tf import config_lib
from bigbigan_tf import data as data_lib
from bigbigan_tf import defaults
from bigbigan_tf import standing_stats
from bigbigan_tf.models import ops

# Encoder outputs usable as frozen features.
FEATURES = defaults.FEATURES
# Where export.py keeps the run's config inside a module.
MODULE_CONFIG_ASSET = os.path.join('assets', 'config.json')


class ModuleLoadError(ValueError):
  """An exported module cannot be loaded or lacks the BigBiGAN interface."""


class Networks:
  """Inference-mode E and G with the exported module's interface.

  Attributes:
    source: 'checkpoint' or 'module'.
    path: the checkpoint path or the module path / handle.
    step: the training step of the weights, or None if unknown (e.g. an
      official TF Hub module).
    z_dim: latent size.
    resolution: G's output side R.
    encoder_resolution: E's input side R_E.
  """

  def __init__(self, *, source: str, path: str, step: Optional[int],
               z_dim: int, resolution: int, encoder_resolution: int,
               generate_fn, encode_fn, keep_alive=None):
    self.source, self.path, self.step = source, path, step
    self.z_dim = z_dim
    self.resolution = resolution
    self.encoder_resolution = encoder_resolution
    self._generate_fn = generate_fn
    self._encode_fn = encode_fn
    # A loaded SavedModel's functions need the loaded object alive.
    self._keep_alive = keep_alive

  def generate(self, z: np.ndarray) -> np.ndarray:
    """G(z): float32 [N, z_dim] -> float32 [N, R, R, 3] in [-1, 1]."""
    return np.asarray(self._generate_fn(tf.constant(z, tf.float32)))

  def encode(self, images: np.ndarray) -> Dict[str, np.ndarray]:
    """E(x): float32 [N, R_E, R_E, 3] in [-1, 1] -> {FEATURES: [N, D]}."""
    out = self._encode_fn(tf.constant(images, tf.float32))
    return {key: np.asarray(out[key]) for key in FEATURES}


def load_from_workdir(
    workdir: str, *, checkpoint: Optional[str] = None,
    standing_stats_batches: int = defaults.STANDING_STATS_BATCHES,
    standing_stats_batch_size: int = (
        defaults.STANDING_STATS_BATCH_SIZE)
) -> Tuple[ml_collections.ConfigDict, Networks]:
  """The EMA G and E of a training run's checkpoint, in inference mode.

  By default their batch norms get BigGAN's standing statistics, recomputed
  exactly as export.py does (same batches, same seed), so a checkpoint and
  its export give the same figures. With `standing_stats_batches=0` they keep
  the moving statistics copied from the live networks at checkpoint time
  (see bigbigan_tf/ema.py). Those belong to the live weights, not to the
  averaged ones: on the offline default they cut the fraction of
  reconstructions that keep the digit's label from 54% to 30%.

  Args:
    workdir: the directory train.py wrote to.
    checkpoint: a checkpoint path (W/checkpoints/ckpt-STEP); default: the
      latest.
    standing_stats_batches: batches of standing statistics for G's and E's
      batch norms (export.py's --standing_stats_batches); 0 keeps the
      checkpoint's moving statistics.
    standing_stats_batch_size: examples per standing-statistics batch.

  Returns:
    (config, networks).

  Raises:
    FileNotFoundError: no config or no checkpoint in the workdir, or the
      given checkpoint does not exist.
    ModuleLoadError: the checkpoint lacks the EMA networks' weights.
  """
  # restore() builds the networks in float32, checks that the checkpoint
  # exists and refuses one that lacks any variable of the state, so
  # evaluation never measures random weights.
  try:
    config, state, checkpoint = checkpoints.restore(workdir,
                                                    checkpoint=checkpoint)
  except checkpoints.IncompleteCheckpointError as e:
    raise ModuleLoadError(str(e)) from e
  generator, encoder = state.ema_generator, state.ema_encoder
  # z_dim and G's resolution from the built networks; E takes any size, so
  # its input side is the config's.
  z_dim, resolution = generator.z_dim, generator.resolution
  encoder_resolution = config.model.encoder_resolution
  # As export.py sets them (same batches, same seed).
  standing_stats.standing_statistics(config, generator, encoder,
                                     num_batches=standing_stats_batches,
                                     batch_size=standing_stats_batch_size)
  z_spec = tf.TensorSpec([None, z_dim], tf.float32)
  x_spec = tf.TensorSpec(
      [None, encoder_resolution, encoder_resolution, 3], tf.float32)

  @tf.function(input_signature=[z_spec], autograph=False)
  def generate(z):
    return generator(z, training=False)

  @tf.function(input_signature=[x_spec], autograph=False)
  def encode(x):
    # Zero noise: only the deterministic outputs are used.
    out = encoder(x, training=False, noise=tf.zeros([tf.shape(x)[0], z_dim]))
    return {key: out[key] for key in FEATURES}

  nets = Networks(source='checkpoint', path=checkpoint,
                  step=int(state.step.numpy()), z_dim=z_dim,
                  resolution=resolution,
                  encoder_resolution=encoder_resolution,
                  generate_fn=generate, encode_fn=encode, keep_alive=state)
  logging.info('Evaluating the EMA networks of %s (step %d), batch-norm '
               'statistics: %s.', checkpoint, nets.step,
               f'standing over {standing_stats_batches} batches'
               if standing_stats_batches else 'the checkpoint\'s')
  return config, nets


def _static_dim(spec, index: int) -> Optional[int]:
  shape = getattr(spec, 'shape', None)
  if shape is None or shape.rank is None or shape.rank <= index:
    return None
  return shape[index]


def _signature_input(signature, name: str, module_path: str,
                     signature_name: str):
  inputs = signature.structured_input_signature[1]
  if name not in inputs:
    raise ModuleLoadError(
        f'The {signature_name!r} signature of {module_path} takes inputs '
        f'{sorted(inputs)}, not {name!r}; pass a module with the BigBiGAN '
        'interface (export.py or the official TF Hub module).')
  return inputs[name]


def load_from_module(path: str, *,
                     config: Optional[ml_collections.ConfigDict] = None
                     ) -> Networks:
  """E and G of a SavedModel with the `encode` / `generate` signatures.

  Loaded with `hub.load`, which reads TF2 SavedModels (export.py) and TF1
  Hub-format modules (DeepMind's official ones) alike. Resolutions and z_dim
  come from the signatures' static shapes, falling back to `config.model`.

  Args:
    path: local or gs:// directory, or a TF Hub handle (https://...).
    config: the run's config, used only for shapes the signatures leave
      unknown.

  Returns:
    The networks; `step` is the module's `step` variable if it has one.

  Raises:
    ModuleLoadError: the path holds no SavedModel, loading fails, or the
      module lacks the `encode` / `generate` signatures or their shapes.
  """
  import tensorflow_hub as hub  # pylint: disable=g-import-not-at-top

  is_handle = path.startswith(('http://', 'https://'))
  if not is_handle:
    if not tf.io.gfile.isdir(path):
      raise ModuleLoadError(
          f'--module={path}: no such directory. Pass the --export_dir '
          'export.py wrote (or an unpacked TF Hub module).')
    if not tf.io.gfile.exists(os.path.join(path, 'saved_model.pb')):
      raise ModuleLoadError(
          f'--module={path} holds no saved_model.pb, so it is not a '
          'SavedModel; pass the --export_dir export.py wrote (or an unpacked '
          'TF Hub module).')
  try:
    module = hub.load(path)
  except Exception as e:  # pylint: disable=broad-except
    raise ModuleLoadError(
        f'Loading the module {path} failed ({type(e).__name__}: '
        f'{str(e).splitlines()[0] if str(e) else ""}); pass a directory '
        'written by export.py or a TF Hub BigBiGAN module.') from None
  signatures = getattr(module, 'signatures', {})
  missing = [n for n in ('encode', 'generate') if n not in signatures]
  if missing:
    raise ModuleLoadError(
        f'The module {path} has no {" / ".join(missing)} signature '
        f'(signatures: {sorted(signatures)}); pass a module with the BigBiGAN '
        'interface (export.py or the official TF Hub module).')
  encode_sig, generate_sig = signatures['encode'], signatures['generate']
  z_spec = _signature_input(generate_sig, 'z', path, 'generate')
  x_spec = _signature_input(encode_sig, 'x', path, 'encode')
  out_spec = generate_sig.structured_outputs.get('default')
  model = config.model if config is not None else None
  z_dim = _static_dim(z_spec, 1) or (model and model.z_dim)
  encoder_resolution = (_static_dim(x_spec, 1) or
                        (model and model.encoder_resolution))
  resolution = _static_dim(out_spec, 1) or (model and model.resolution)
  if not (z_dim and encoder_resolution and resolution):
    raise ModuleLoadError(
        f'The signatures of {path} leave z_dim / resolutions unknown and no '
        'config gives them; evaluate with a --workdir holding the config.json '
        'of the run.')
  encode_outputs = set(encode_sig.structured_outputs)
  if not set(FEATURES) <= encode_outputs:
    raise ModuleLoadError(
        f'The encode signature of {path} returns {sorted(encode_outputs)}, '
        f'lacking {sorted(set(FEATURES) - encode_outputs)}.')
  step_var = getattr(module, 'step', None)
  step = int(step_var.numpy()) if isinstance(step_var, tf.Variable) else None
  logging.info('Evaluating module %s (step %s): G %dpx, E %dpx, z_dim %d.',
               path, step, resolution, encoder_resolution, z_dim)
  return Networks(
      source='module', path=path, step=step, z_dim=int(z_dim),
      resolution=int(resolution), encoder_resolution=int(encoder_resolution),
      generate_fn=lambda z: generate_sig(z=z)['default'],
      encode_fn=lambda x: encode_sig(x=x), keep_alive=module)


def module_config(path: str) -> Optional[ml_collections.ConfigDict]:
  """The run's config stored in a module by export.py, or None."""
  config_path = os.path.join(path, MODULE_CONFIG_ASSET)
  if path.startswith(('http://', 'https://')) or not tf.io.gfile.exists(
      config_path):
    return None
  with tf.io.gfile.GFile(config_path) as f:
    return ml_collections.ConfigDict(json.load(f))


def load_config(workdir: str, module: Optional[str]
                ) -> ml_collections.ConfigDict:
  """The run's config: W/config.json, else (with a module) its asset.

  Raises:
    FileNotFoundError: neither holds a config; the message says what to do.
  """
  if tf.io.gfile.exists(os.path.join(workdir, config_lib.CONFIG_FILENAME)):
    return checkpoints.load_config(workdir)
  if module is not None:
    config = module_config(module)
    if config is not None:
      return config
    raise FileNotFoundError(
        f'Neither {workdir} nor the module {module} holds a config.json, '
        'which says what data to evaluate on. Give a --workdir with one, e.g. '
        'written by `python train.py --workdir=W --config=CONFIG '
        '--config.num_train_steps=0`.')
  return checkpoints.load_config(workdir)  # Raises with the workdir message.


def generated_batches(nets: Networks, *, num: int, batch_size: int,
                      seed: int) -> Iterator[np.ndarray]:
  """G(z) for `num` latents z ~ N(0, I) of one seeded stream, in batches.

  The latents are drawn batch by batch from one seeded stream, which gives
  the same rows as one big draw: row i depends only on (seed, i), not on
  batch_size.

  Yields:
    float32 [B, R, R, 3] in [-1, 1], B <= batch_size, num images in all.
  """
  rng = np.random.default_rng(seed)
  for start in range(0, num, batch_size):
    size = min(batch_size, num - start)
    z = rng.standard_normal((size, nets.z_dim)).astype(np.float32)
    yield nets.generate(z)


def real_batches(config: ml_collections.ConfigDict, *, split: str,
                 image_size: int, batch_size: int) -> tf.data.Dataset:
  """One ordered pass over a split: {'image': [B, S, S, 3], 'label': [B]}.

  The eval pipeline of bigbigan_tf.data (central square, no augmentation).
  Folders have no splits: every split is the whole folder.
  """
  return data_lib.make_dataset(config.data, image_size=image_size,
                               batch_size=batch_size, training=False,
                               split=split, seed=config.seed)


def downsample(images: np.ndarray, resolution: int) -> np.ndarray:
  """E-resolution images average-pooled to G's resolution, as F sees them."""
  return ops.downsample_to(tf.constant(images), resolution).numpy()
