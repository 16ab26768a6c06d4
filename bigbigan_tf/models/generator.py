"""BigGAN generator G, unconditional, with hierarchical z (Brock et al. 2018)."""

import numpy as np
import keras
from keras import ops

from bigbigan_tf.models import layers
from bigbigan_tf.models import serialization
from bigbigan_tf.models.fast_ops import FastOps

# BigGAN's channel multipliers per output resolution: (input width of each
# block, output width of each block), in units of ch. Blocks double the
# resolution from 4x4.
G_ARCH = {
    32: ((4, 4, 4), (4, 4, 4)),
    64: ((16, 16, 8, 4), (16, 8, 4, 2)),
    128: ((16, 16, 8, 4, 2), (16, 8, 4, 2, 1)),
    256: ((16, 16, 8, 8, 4, 2), (16, 8, 8, 4, 2, 1)),
}


def block_widths(resolution: int, channel_multipliers=()) -> tuple:
  """(input width of each block, output width of each block) in units of ch:
  BigGAN's, or `channel_multipliers` (one output width per block; the 4x4
  map has the first block's width, as in BigGAN)."""
  if not channel_multipliers:
    return G_ARCH[resolution]
  out = tuple(channel_multipliers)
  if len(out) != len(G_ARCH[resolution][1]):
    raise ValueError(
        f'G at {resolution}px has {len(G_ARCH[resolution][1])} blocks, so '
        f'channel_multipliers needs that many widths; got {out}.')
  return (out[0],) + out[:-1], out


def block_resolutions(resolution: int) -> list[int]:
  """Output resolution of each of G's blocks at `resolution` (4x4 doubled)."""
  return [4 * 2 ** (i + 1) for i in range(len(G_ARCH[resolution][1]))]


def attention_resolutions(resolution: int) -> list[int]:
  """Where G's self-attention may go: after any block (0 = none)."""
  return [0] + block_resolutions(resolution)


def num_z_chunks(resolution: int) -> int:
  """How many chunks G splits z into: one per block plus one."""
  return len(G_ARCH[resolution][1]) + 1


def z_chunk_sizes(z_dim: int, num_blocks: int) -> list[int]:
  """Sizes of z's chunks: one for the 4x4 linear layer, one per block.

  BigGAN requires z_dim divisible by num_blocks + 1; uneven sizes (the first
  chunks one larger) let any z_dim >= num_blocks + 1 work.
  """
  return [len(a) for a in np.array_split(np.arange(z_dim), num_blocks + 1)]


@serialization.register
class Generator(serialization.SavedArgs, layers.BlockStack, keras.Model):
  """G: z [B, z_dim] -> image [B, R, R, 3] in [-1, 1] (tanh).

  z is split into num_blocks + 1 chunks: the first feeds the linear layer that
  makes the 4x4 map, each other conditions one block's two batch norms. With
  `embed_dim` > 0 a learned constant vector (the single class embedding an
  unconditional BigGAN keeps; the official weights' port feeds one) is joined
  to every chunk. `fast_ops` picks how convolutions and batch norms are
  computed (fast_ops.py; the same function either way).
  """

  def __init__(self, *, resolution: int, z_dim: int, ch: int,
               attention_resolution: int = 0, embed_dim: int = 0,
               bn_epsilon: float = 1e-5, bn_momentum: float = 0.99,
               channel_multipliers: tuple = (),
               fast_ops: FastOps = FastOps(), name: str = 'generator',
               **kwargs):
    super().__init__(name=name, **kwargs)
    self._record_args(
        resolution=resolution, z_dim=z_dim, ch=ch,
        attention_resolution=attention_resolution, embed_dim=embed_dim,
        bn_epsilon=bn_epsilon, bn_momentum=bn_momentum,
        channel_multipliers=tuple(channel_multipliers))
    if resolution not in G_ARCH:
      raise ValueError(f'Generator resolution {resolution} is not one of '
                       f'{sorted(G_ARCH)}.')
    in_mult, out_mult = block_widths(resolution, channel_multipliers)
    self.resolution = resolution
    self.z_dim = z_dim
    self.embed_dim = embed_dim
    self.fast_ops = fast_ops
    self.input_spec = keras.InputSpec(ndim=2, axes={-1: z_dim})
    self.chunk_sizes = z_chunk_sizes(z_dim, len(out_mult))
    self.base_channels = in_mult[0] * ch
    self.linear = layers.SNDense(4 * 4 * self.base_channels, name='linear')
    blocks, self.attention_after = [], -1
    for i, (mult, res) in enumerate(zip(out_mult,
                                        block_resolutions(resolution))):
      blocks.append(layers.GBlock(
          mult * ch, bn_epsilon=bn_epsilon, bn_momentum=bn_momentum,
          fast_ops=fast_ops, name=f'block{i}'))
      if res == attention_resolution:
        self.attention_after = i
        self.attention_layer = layers.SelfAttention(fast_ops=fast_ops,
                                                    name=f'attention{res}')
    layers.set_layer_list(self, 'block', blocks)
    self.out_bn = layers.batch_norm(epsilon=bn_epsilon, momentum=bn_momentum,
                                    affine=True, fast_ops=fast_ops,
                                    name='out_bn')
    self.out_conv = layers.SNConv2D(3, 3, fast_ops=fast_ops, name='out_conv')
    self.embedding = None
    if embed_dim:
      self.embedding = self.add_weight(
          name='embedding', shape=(embed_dim,),
          initializer=keras.initializers.RandomNormal(stddev=1.0))

  def _build_config(self) -> dict:
    return {'z_dim': self.z_dim, 'resolution': self.resolution,
            'input_shape': [None, self.z_dim]}

  def compute_output_shape(self, z_shape) -> tuple:
    """[B, z_dim] -> [B, R, R, 3]."""
    return (z_shape[0], self.resolution, self.resolution, 3)

  def compute_output_spec(self, z, training=False) -> keras.KerasTensor:
    del training  # The shape does not depend on it.
    return keras.KerasTensor(self.compute_output_shape(z.shape),
                             dtype='float32')

  def _build_inputs(self, build_config: dict) -> tuple:
    return (np.zeros((1, self.z_dim), np.float32),)

  def call(self, z, training=False):
    z = ops.cast(z, self.compute_dtype)
    bounds = np.cumsum([0] + self.chunk_sizes)
    chunks = [z[:, bounds[i]:bounds[i + 1]] for i in range(len(bounds) - 1)]
    h = self.linear(chunks[0], training=training)
    h = ops.reshape(h, (-1, 4, 4, self.base_channels))
    for i, block in enumerate(self.blocks):
      cond = chunks[i + 1]
      if self.embedding is not None:
        emb = ops.cast(self.embedding, cond.dtype)
        emb = ops.broadcast_to(emb[None, :],
                               (ops.shape(cond)[0], self.embed_dim))
        cond = ops.concatenate([cond, emb], axis=-1)
      h = block(h, cond, training=training)
      if i == self.attention_after:
        h = self.attention_layer(h, training=training)
    h = ops.relu(self.out_bn(h, training=training))
    h = self.out_conv(h, training=training)
    return ops.cast(ops.tanh(h), 'float32')
