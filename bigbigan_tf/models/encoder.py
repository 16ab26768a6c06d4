"""BigBiGAN's stochastic encoder E: a ResNet-v2 and an MLP head to (mu, sigma).

The released `bigbigan-resnet50` module is a ResNet-v2-50 on 256x256 input;
`width_multiplier` scales every channel count (1.0 gives 2048-d pooled
features) and `blocks_per_stage` gives shallow variants for tests.
"""

from typing import Optional, Sequence

import keras
import numpy as np
from keras import ops

from bigbigan_tf.models import layers
from bigbigan_tf.models import serialization
from bigbigan_tf.models.fast_ops import FastOps

_STAGE_WIDTHS = (64, 128, 256, 512)  # bottleneck widths; outputs are 4x
_SEED_KEY = 'noise_seed_state'  # in the encoder's own variables of a .keras


def _conv(fast_ops: FastOps, filters, kernel_size, strides=1, name=None):
  return fast_ops.conv2d(filters, kernel_size, strides=strides,
                         padding='same', use_bias=False,
                         kernel_initializer='he_normal', name=name)


class BottleneckV2(keras.layers.Layer):
  """Pre-activation bottleneck: BN-ReLU-1x1, BN-ReLU-3x3(stride), BN-ReLU-1x1.

  The projection shortcut (when the shape changes) reads the pre-activated
  input, as in ResNet-v2. [B, H, W, in] -> [B, H/stride, W/stride, 4*width].
  """

  def __init__(self, width: int, *, strides: int, bn_epsilon: float,
               bn_momentum: float, fast_ops: FastOps = FastOps(), **kwargs):
    super().__init__(**kwargs)
    self.width, self.strides = width, strides
    self.fast_ops = fast_ops
    bn = dict(epsilon=bn_epsilon, momentum=bn_momentum, affine=True,
              fast_ops=fast_ops)
    self.bn1 = layers.batch_norm(**bn, name='bn1')
    self.bn2 = layers.batch_norm(**bn, name='bn2')
    self.bn3 = layers.batch_norm(**bn, name='bn3')
    self.conv1 = _conv(fast_ops, width, 1, name='conv1')
    self.conv2 = _conv(fast_ops, width, 3, strides, name='conv2')
    self.conv3 = _conv(fast_ops, 4 * width, 1, name='conv3')

  def build(self, input_shape):
    self.project = input_shape[-1] != 4 * self.width or self.strides != 1
    self.conv_sc = (_conv(self.fast_ops, 4 * self.width, 1, self.strides,
                          name='conv_sc')
                    if self.project else None)

  def call(self, x, training=False):
    preact = ops.relu(self.bn1(x, training=training))
    shortcut = self.conv_sc(preact) if self.project else x
    h = self.conv1(preact)
    h = self.conv2(ops.relu(self.bn2(h, training=training)))
    h = self.conv3(ops.relu(self.bn3(h, training=training)))
    return h + shortcut


@serialization.register
class Encoder(serialization.SavedArgs, keras.Model):
  """E: x [B, R_E, R_E, 3] in [-1, 1] -> dict of features and latents.

  Returns:
    avepool_feat [B, F]: global average pool of the ResNet's last activations
      (F = 2048 * width_multiplier).
    bn_crelu_feat [B, 2F]: batch norm of avepool_feat (no affine), then CReLU
      (concat(relu(f), relu(-f))).
    z_mean, z_stdev, z_sample [B, z_dim]: z_stdev = softplus(sigma_hat),
      z_sample = z_mean + z_stdev * noise, or z_mean when the encoder is
      deterministic (`stochastic=False`, the paper's Table 1 ablation; z_stdev
      is still returned, unused by training).

  `fast_ops` picks how convolutions and batch norms are computed (fast_ops.py;
  the same function either way).

  `resolution` (R_E) is the input size the weights were trained for; when set
  (build_networks and every export set it), other sizes are refused: the
  network is fully convolutional, so they would run but give other features.
  When `noise` is not passed, z_sample's noise comes from `noise_seed`, a
  `keras.random.SeedGenerator` seeded with `seed`: a model variable, so
  `keras.Input` graphs, `predict`, `fit` and `evaluate` trace on every
  backend (JAX refuses unseeded draws under tracing) and the stream is saved
  in `.keras` files. Training passes its own noise (trainer.py), so this
  stream never touches a training step.
  """

  def __init__(self, *, z_dim: int,
               blocks_per_stage: Sequence[int] = (3, 4, 6, 3),
               width_multiplier: float = 1.0, head_depth: int = 0,
               head_width: int = 4096, bn_epsilon: float = 1e-5,
               bn_momentum: float = 0.99, stochastic: bool = True,
               resolution: Optional[int] = None, seed: int = 0,
               fast_ops: FastOps = FastOps(), name: str = 'encoder',
               **kwargs):
    super().__init__(name=name, **kwargs)
    self._record_args(
        z_dim=z_dim, blocks_per_stage=tuple(blocks_per_stage),
        width_multiplier=width_multiplier, head_depth=head_depth,
        head_width=head_width, bn_epsilon=bn_epsilon,
        bn_momentum=bn_momentum, stochastic=stochastic,
        resolution=resolution, seed=seed, **self._extra_args())
    self.z_dim = z_dim
    self.stochastic = stochastic
    self.resolution = resolution
    self.fast_ops = fast_ops
    # Rank and channels always; the size is checked in `call` (clearer).
    self.input_spec = keras.InputSpec(ndim=4, axes={-1: 3})
    self.noise_seed = keras.random.SeedGenerator(seed, name='noise_seed')
    self._build_trunk(blocks_per_stage, width_multiplier,
                      dict(bn_epsilon=bn_epsilon, bn_momentum=bn_momentum))
    bn = dict(epsilon=bn_epsilon, momentum=bn_momentum, fast_ops=fast_ops)
    self.post_bn = layers.batch_norm(**bn, affine=True, name='post_bn')
    self.feat_bn = layers.batch_norm(**bn, affine=False, name='feat_bn')
    # Head: MLP with a skip from the pooled features straight to (mu, sigma^).
    self.head = (layers.ResidualMLP(width=head_width, depth=head_depth - 1,
                                    spectral_norm=False, name='head')
                 if head_depth > 0 else None)
    self.head_out = keras.layers.Dense(2 * z_dim, name='head_out')
    self.skip_out = (keras.layers.Dense(2 * z_dim, use_bias=False,
                                        name='skip_out')
                     if head_depth > 0 else None)

  def _extra_args(self) -> dict:
    """A subclass's own constructor arguments, for `get_config`."""
    return {}

  def _build_config(self) -> dict:
    r = self.resolution
    return {'z_dim': self.z_dim, 'resolution': r,
            'input_shape': [None, r, r, 3]}

  def _build_inputs(self, build_config: dict) -> tuple:
    # Any size of at least 32 creates the same weights (global pooling).
    r = self.resolution or 32
    return (np.zeros((1, r, r, 3), np.float32),)

  def build_from_config(self, config: dict) -> None:
    # Zero noise: building does not consume a draw of `noise_seed`.
    (x,) = self._build_inputs(config)
    self(x, training=False, noise=np.zeros((1, self.z_dim), np.float32))

  def save_own_variables(self, store) -> None:
    # Keras leaves seed generators out of .keras files; the noise stream's
    # position is saved too, so a reloaded model continues it.
    super().save_own_variables(store)
    store[_SEED_KEY] = self.noise_seed.state

  def load_own_variables(self, store) -> None:
    values = {k: store[k] for k in store.keys()}
    # Files written before the seed was saved lack it: the stream starts
    # at `seed` again.
    if _SEED_KEY in values:
      self.noise_seed.state.assign(values.pop(_SEED_KEY))
    super().load_own_variables(values)

  def compute_output_shape(self, input_shape) -> dict[str, tuple]:
    """Shapes of `call`'s outputs for x of `input_shape` [B, R, R, 3]."""
    self._check_resolution(input_shape)
    b = input_shape[0]
    return {'avepool_feat': (b, self.feature_dim),
            'bn_crelu_feat': (b, 2 * self.feature_dim),
            **{k: (b, self.z_dim) for k in ('z_mean', 'z_stdev',
                                             'z_sample')}}

  def compute_output_spec(self, x, training=False, noise=None) -> dict:
    # From the shapes, without tracing `call` symbolically; every output is
    # float32 whatever the compute dtype.
    del training, noise  # Shapes do not depend on them.
    return {k: keras.KerasTensor(s, dtype='float32')
            for k, s in self.compute_output_shape(x.shape).items()}

  def _check_resolution(self, shape) -> None:
    serialization.check_image_size(self.name, self.resolution, shape,
                                   'other features')

  def _build_trunk(self, blocks_per_stage: Sequence[int],
                   width_multiplier: float, bn: dict) -> None:
    """Creates the layers `_trunk` runs and sets `self.feature_dim`."""
    widths = [max(1, int(round(w * width_multiplier))) for w in _STAGE_WIDTHS]
    self.feature_dim = 4 * widths[-1]
    self.stem = _conv(self.fast_ops, widths[0], 7, 2, name='stem')
    blocks = []
    for s, (width, n) in enumerate(zip(widths, blocks_per_stage)):
      for b in range(n):
        strides = 2 if (b == 0 and s > 0) else 1
        blocks.append(BottleneckV2(width, strides=strides, **bn,
                                   fast_ops=self.fast_ops,
                                   name=f'stage{s + 1}_block{b + 1}'))
    layers.set_layer_list(self, 'block', blocks)

  @property
  def blocks(self) -> list:
    return layers.get_layer_list(self, 'block')

  def _trunk(self, x, training=False):
    """[B, R_E, R_E, 3] -> last activations [B, R_E/32, R_E/32, F]."""
    h = self.stem(ops.cast(x, self.compute_dtype))
    h = ops.max_pool(h, pool_size=3, strides=2, padding='same')
    for block in self.blocks:
      h = block(h, training=training)
    return h

  def call(self, x, training=False, noise: Optional[keras.KerasTensor] = None):
    self._check_resolution(x.shape)
    h = self._trunk(x, training=training)
    h = ops.relu(self.post_bn(h, training=training))
    pooled = ops.mean(h, axis=(1, 2))
    f = self.feat_bn(pooled, training=training)
    bn_crelu = ops.concatenate([ops.relu(f), ops.relu(-f)], axis=-1)
    if self.head is not None:
      out = (self.head_out(self.head(pooled, training=training))
             + self.skip_out(pooled))
    else:
      out = self.head_out(pooled)
    out = ops.cast(out, 'float32')
    z_mean, sigma_hat = out[:, :self.z_dim], out[:, self.z_dim:]
    z_stdev = ops.softplus(sigma_hat)
    if not self.stochastic:
      z_sample = z_mean
    else:
      if noise is None:
        noise = keras.random.normal(ops.shape(z_mean), seed=self.noise_seed)
      z_sample = z_mean + z_stdev * ops.cast(noise, 'float32')
    return {
        'avepool_feat': ops.cast(pooled, 'float32'),
        'bn_crelu_feat': ops.cast(bn_crelu, 'float32'),
        'z_mean': z_mean,
        'z_stdev': z_stdev,
        'z_sample': z_sample,
    }
