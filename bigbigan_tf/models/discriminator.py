"""BigBiGAN's joint discriminator D = (F, H, J) with unary terms.

F scores x alone (a BigGAN discriminator), H scores z alone (an MLP), J scores
the pair from F's and H's features. All linear maps are spectrally normalised.
"""

import keras
from keras import ops
import numpy as np

from bigbigan_tf.models import layers
from bigbigan_tf.models import serialization
from bigbigan_tf.models.fast_ops import FastOps

# BigGAN's discriminator per input resolution: (output width of each block,
# in units of ch; whether it halves the resolution). Each block's input width
# is the previous block's output (the image's 3 channels first).
D_ARCH = {
    32: ((4, 4, 4, 4), (True, True, False, False)),
    64: ((1, 2, 4, 8, 16), (True,) * 5),
    128: ((1, 2, 4, 8, 16, 16), (True,) * 5 + (False,)),
    256: ((1, 2, 4, 8, 8, 16, 16), (True,) * 6 + (False,)),
}


def block_widths(resolution: int, channel_multipliers=()) -> tuple:
  """F's output width of each block in units of ch: BigGAN's, or
  `channel_multipliers` (one per block)."""
  if not channel_multipliers:
    return D_ARCH[resolution][0]
  out = tuple(channel_multipliers)
  if len(out) != len(D_ARCH[resolution][0]):
    raise ValueError(
        f'F at {resolution}px has {len(D_ARCH[resolution][0])} blocks, so '
        f'channel_multipliers needs that many widths; got {out}.')
  return out


def attention_resolutions(resolution: int) -> list[int]:
  """Where F's self-attention may go (0 = none): after a block that halves
  the resolution, at that block's output resolution."""
  out, res = [0], resolution
  for down in D_ARCH[resolution][1]:
    if down:
      res //= 2
      out.append(res)
  return out


class ImageDiscriminator(layers.BlockStack, keras.Model):
  """F: x [B, R, R, 3] in [-1, 1] -> (features [B, 16ch or 4ch], s_x [B])."""

  def __init__(self, *, resolution: int, ch: int, attention_resolution: int = 0,
               channel_multipliers: tuple = (),
               fast_ops: FastOps = FastOps(), name: str = 'F', **kwargs):
    super().__init__(name=name, **kwargs)
    if resolution not in D_ARCH:
      raise ValueError(f'Discriminator resolution {resolution} is not one of '
                       f'{sorted(D_ARCH)}.')
    down = D_ARCH[resolution][1]
    out_mult = block_widths(resolution, channel_multipliers)
    self.resolution = resolution
    self.fast_ops = fast_ops
    blocks, self.attention_after = [], -1
    res = resolution
    for i, (mult, d) in enumerate(zip(out_mult, down)):
      blocks.append(layers.DBlock(mult * ch, downsample=d,
                                  preactivation=i > 0, fast_ops=fast_ops,
                                  name=f'block{i}'))
      res = res // 2 if d else res
      if res == attention_resolution and self.attention_after < 0 and d:
        self.attention_after = i
        self.attention_layer = layers.SelfAttention(fast_ops=fast_ops,
                                                    name=f'attention{res}')
    layers.set_layer_list(self, 'block', blocks)
    self.feature_dim = out_mult[-1] * ch
    self.score = layers.SNDense(1, name='score')

  def call(self, x, training=False):
    h = ops.cast(x, self.compute_dtype)
    for i, block in enumerate(self.blocks):
      h = block(h, training=training)
      if i == self.attention_after:
        h = self.attention_layer(h, training=training)
    # BigGAN: ReLU, then a sum (not a mean) over space.
    features = ops.sum(ops.relu(h), axis=(1, 2))
    s_x = ops.squeeze(self.score(features, training=training), -1)
    return features, ops.cast(s_x, 'float32')


class LatentDiscriminator(keras.Model):
  """H: z [B, z_dim] -> (features [B, width], s_z [B])."""

  def __init__(self, *, width: int, depth: int, name: str = 'H', **kwargs):
    super().__init__(name=name, **kwargs)
    self.mlp = layers.ResidualMLP(width=width, depth=depth, spectral_norm=True,
                                  name='mlp')
    self.score = layers.SNDense(1, name='score')

  def call(self, z, training=False):
    features = self.mlp(ops.cast(z, self.compute_dtype), training=training)
    s_z = ops.squeeze(self.score(features, training=training), -1)
    return features, ops.cast(s_z, 'float32')


class JointDiscriminator(keras.Model):
  """J: (F features, H features) -> s_xz [B]."""

  def __init__(self, *, width: int, depth: int, name: str = 'J', **kwargs):
    super().__init__(name=name, **kwargs)
    self.mlp = layers.ResidualMLP(width=width, depth=depth, spectral_norm=True,
                                  name='mlp')
    self.score = layers.SNDense(1, name='score')

  def call(self, x_features, z_features, training=False):
    h = ops.concatenate([x_features, z_features], axis=-1)
    h = self.mlp(h, training=training)
    return ops.cast(ops.squeeze(self.score(h, training=training), -1),
                    'float32')


@serialization.register
class Discriminator(serialization.SavedArgs, keras.Model):
  """D(x, z) -> {'score_x', 'score_z', 'score_xz'}, each [B] float32.

  x: [B, R, R, 3] in [-1, 1] at G's resolution; z: [B, z_dim].
  """

  def __init__(self, *, resolution: int, ch: int, attention_resolution: int,
               h_width: int, h_depth: int, j_width: int, j_depth: int,
               channel_multipliers: tuple = (),
               fast_ops: FastOps = FastOps(), name: str = 'discriminator',
               **kwargs):
    super().__init__(name=name, **kwargs)
    self._record_args(
        resolution=resolution, ch=ch,
        attention_resolution=attention_resolution, h_width=h_width,
        h_depth=h_depth, j_width=j_width, j_depth=j_depth,
        channel_multipliers=tuple(channel_multipliers))
    self.resolution = resolution
    self.fast_ops = fast_ops
    self.f = ImageDiscriminator(resolution=resolution, ch=ch,
                                attention_resolution=attention_resolution,
                                channel_multipliers=channel_multipliers,
                                fast_ops=fast_ops)
    self.h = LatentDiscriminator(width=h_width, depth=h_depth)
    self.j = JointDiscriminator(width=j_width, depth=j_depth)

  def _build_config(self) -> dict:
    # z's size is not a constructor argument: it is read from H's weights.
    z_dim, r = int(self.h.mlp.proj.kernel.shape[0]), self.resolution
    return {'z_dim': z_dim, 'resolution': r,
            'input_shape': [[None, r, r, 3], [None, z_dim]]}

  def compute_output_shape(self, x_shape, z_shape) -> dict[str, tuple]:
    """([B, R, R, 3], [B, z_dim]) -> {'score_x', 'score_z', 'score_xz'}."""
    self._check_resolution(x_shape)
    return {k: (x_shape[0],) for k in ('score_x', 'score_z', 'score_xz')}

  def compute_output_spec(self, x, z, training=False) -> dict:
    del training  # Shapes do not depend on it.
    return {k: keras.KerasTensor(s, dtype='float32') for k, s in
            self.compute_output_shape(x.shape, z.shape).items()}

  def _check_resolution(self, shape) -> None:
    serialization.check_image_size(self.name, self.resolution, shape,
                                   'other scores')

  def _build_inputs(self, build_config: dict) -> tuple:
    r = self.resolution
    return (np.zeros((1, r, r, 3), np.float32),
            np.zeros((1, build_config['z_dim']), np.float32))

  def call(self, x, z, training=False):
    self._check_resolution(x.shape)
    x_features, s_x = self.f(x, training=training)
    z_features, s_z = self.h(z, training=training)
    s_xz = self.j(x_features, z_features, training=training)
    return {'score_x': s_x, 'score_z': s_z, 'score_xz': s_xz}
