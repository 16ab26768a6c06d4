"""The three BigBiGAN networks and a factory that builds them from a config."""

import contextlib
import random
from typing import NamedTuple, Optional

import keras
import ml_collections
import numpy as np

from bigbigan_tf import hardware
from bigbigan_tf.models.discriminator import Discriminator
from bigbigan_tf.models.encoder import Encoder
from bigbigan_tf.models.fast_ops import FastOps
from bigbigan_tf.models.generator import Generator
from bigbigan_tf.models.revnet import RevNetEncoder


@contextlib.contextmanager
def initial_values_from(seed: int):
  """Keras's unseeded initializers draw their seeds from `Random(seed)`.

  An unseeded Keras initializer (`RandomNormal(seed=None)`, a kernel
  initializer given by name) takes its seed from Python's global `random`
  when it is made. Another thread may draw from that generator meanwhile:
  google-cloud-storage does, for the boundary of every multipart upload (the
  gs:// lease's heartbeat renews with one). A renewal during the build then
  changed the spectral-norm vectors of the last layers built, and a run
  resumed after a SIGKILL was no longer bit for bit the uninterrupted one.
  Inside this context the seeds come from a generator of this build alone.
  """
  try:
    from keras.src.random import seed_generator  # pylint: disable=g-import-not-at-top
    shared = seed_generator.python_random
  except (ImportError, AttributeError):  # another Keras layout: unpatched
    yield
    return
  seed_generator.python_random = random.Random(seed)
  try:
    yield
  finally:
    seed_generator.python_random = shared


class Networks(NamedTuple):
  generator: Generator
  encoder: Encoder
  discriminator: Discriminator


def build_networks(model_config: ml_collections.ConfigDict, *,
                   fast_ops: Optional[FastOps] = None) -> Networks:
  """Creates G, E and D from `config.model` and builds their weights.

  Args:
    model_config: the `model` section of a config (see configs/base.py).
    fast_ops: how to compute convolutions and batch norms; default:
      `FastOps.from_config(model_config, hardware.switch)` ('auto' follows
      this machine). `FastOps.plain()` gives the plain
      Keras path that runs on every backend and saves as `.keras`.

  Returns:
    Networks(generator, encoder, discriminator), each called once on zeros
    (batch 2) so every weight exists, e.g. for checkpoint restore. All three
    hold the same `fast_ops`.
  """
  m = model_config
  # One resolution of the speed switches ('auto' follows this machine) for
  # all three networks.
  if fast_ops is None:
    fast_ops = FastOps.from_config(m, hardware.switch)
  g, e, d = m.generator, m.encoder, m.discriminator
  generator = Generator(
      resolution=m.resolution, z_dim=m.z_dim, ch=g.ch,
      attention_resolution=g.attention_resolution, embed_dim=g.embed_dim,
      bn_epsilon=g.bn_epsilon, bn_momentum=g.bn_momentum,
      channel_multipliers=tuple(g.channel_multipliers),
      fast_ops=fast_ops)
  encoder = {'resnet_v2': Encoder, 'revnet': RevNetEncoder}[e.kind](
      z_dim=m.z_dim, blocks_per_stage=tuple(e.blocks_per_stage),
      width_multiplier=e.width_multiplier, head_depth=e.head_depth,
      head_width=e.head_width, bn_epsilon=e.bn_epsilon,
      bn_momentum=e.bn_momentum, stochastic=e.stochastic,
      resolution=m.encoder_resolution, fast_ops=fast_ops)
  discriminator = Discriminator(
      resolution=m.resolution, ch=d.ch,
      attention_resolution=d.attention_resolution, h_width=d.h_width,
      h_depth=d.h_depth, j_width=d.j_width, j_depth=d.j_depth,
      channel_multipliers=tuple(d.channel_multipliers),
      fast_ops=fast_ops)
  z = np.zeros((2, m.z_dim), np.float32)
  x = np.zeros((2, m.resolution, m.resolution, 3), np.float32)
  x_e = np.zeros((2, m.encoder_resolution, m.encoder_resolution, 3),
                 np.float32)
  generator(z)
  encoder(x_e, noise=z)
  discriminator(x, z)
  return Networks(generator, encoder, discriminator)


def load(path: str) -> keras.Model:
  """Loads a network an export wrote as .keras (e.g. 'E/keras/encoder.keras').

  The same as `keras.saving.load_model(path)` once this package is imported
  (which registers the networks' classes); works on every Keras backend and
  does not import TensorFlow on JAX or PyTorch.
  """
  return keras.saving.load_model(path)
