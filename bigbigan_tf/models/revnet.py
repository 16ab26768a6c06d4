"""RevNet-50 encoder trunk (Kolesnikov, Zhai & Beyer 2019, arXiv 1901.09005).

BigBiGAN's best encoder is the RevNet-50 x4 of "Revisiting Self-Supervised
Visual Representation Learning": the ResNet-v2-50 stage layout (3, 4, 6, 3)
where every block is an additive coupling on two channel halves,

    y = concat(x2, x1 + F(x2)),  F = pre-activation bottleneck on C/2 channels,

so x = concat(y2 - F(y1), y1) is recovered exactly from y. Between stages a
parameter-free, non-reversible downsampling halves the resolution (2x2
average pool) and doubles the channels (zero padding). The stem is a 7x7/2
convolution to 256 * width channels and a 3x3/2 max pool; stage s has
256 * width * 2^s channels (8192 pooled features at x4, ~86M parameters).

On the TensorFlow backend each stage's gradient is a `tf.custom_gradient`
that recomputes every block's input from its output on the way back, so the
stage keeps only its output for the backward pass instead of every block's
activations. Other backends use plain autodiff.
"""

from typing import Sequence

import keras
from keras import ops

from bigbigan_tf.models import encoder as encoder_lib
from bigbigan_tf.models import layers
from bigbigan_tf.models import serialization
from bigbigan_tf.models.fast_ops import FastOps


def _conv(fast_ops: FastOps, filters, kernel_size, strides=1, name=None):
  return fast_ops.conv2d(filters, kernel_size, strides=strides,
                         padding='same', use_bias=False,
                         kernel_initializer='he_normal', name=name)


class RevBlock(keras.layers.Layer):
  """Reversible block: [B, H, W, C] -> [B, H, W, C], y = (x2, x1 + F(x2)).

  F is BN-ReLU-1x1(C/8), BN-ReLU-3x3(C/8), BN-ReLU-1x1(C/2) without a
  shortcut (the coupling is the residual connection).
  """

  def __init__(self, channels: int, *, bn_epsilon: float, bn_momentum: float,
               fast_ops: FastOps = FastOps(), **kwargs):
    super().__init__(**kwargs)
    if channels % 8:
      raise ValueError(f'RevBlock channels must be a multiple of 8, got '
                       f'{channels}; change model.encoder.width_multiplier.')
    self.channels = channels
    bn = dict(epsilon=bn_epsilon, momentum=bn_momentum, affine=True,
              fast_ops=fast_ops)
    self.bn1 = layers.batch_norm(**bn, name='bn1')
    self.bn2 = layers.batch_norm(**bn, name='bn2')
    self.bn3 = layers.batch_norm(**bn, name='bn3')
    self.conv1 = _conv(fast_ops, channels // 8, 1, name='conv1')
    self.conv2 = _conv(fast_ops, channels // 8, 3, name='conv2')
    self.conv3 = _conv(fast_ops, channels // 2, 1, name='conv3')

  def residual(self, x2, training=False, batch_stats_only: bool = False):
    """F(x2): [B, H, W, C/2] -> [B, H, W, C/2].

    Args:
      x2: the second channel half.
      training: batch statistics (and moving-average updates) when True.
      batch_stats_only: normalise with batch statistics without touching the
        moving averages: the reversible backward pass recomputes F with it,
        so the statistics are updated once per step.
    """
    def bn(layer, h):
      if not batch_stats_only:
        return layer(h, training=training)
      h32 = ops.cast(h, 'float32')
      mean, var = ops.moments(h32, axes=(0, 1, 2))
      y = (h32 - mean) * ops.rsqrt(var + layer.epsilon)
      y = y * ops.cast(layer.gamma, 'float32') + ops.cast(layer.beta,
                                                          'float32')
      return ops.cast(y, self.compute_dtype)
    h = self.conv1(ops.relu(bn(self.bn1, x2)))
    h = self.conv2(ops.relu(bn(self.bn2, h)))
    return self.conv3(ops.relu(bn(self.bn3, h)))

  def call(self, x, training=False):
    x1, x2 = x[..., :self.channels // 2], x[..., self.channels // 2:]
    return ops.concatenate(
        [x2, x1 + self.residual(x2, training=training)], axis=-1)

  def inverse(self, y):
    """x from y = self(x, training=True), with the same batch statistics."""
    y1, y2 = y[..., :self.channels // 2], y[..., self.channels // 2:]
    return ops.concatenate(
        [y2 - self.residual(y1, batch_stats_only=True), y1], axis=-1)


def _pool_and_double_channels(h):
  """[B, H, W, C] -> [B, H/2, W/2, 2C]: average pool, zero channels first.

  The zeros go into the half the next block adds to, not the half F reads:
  F's batch norm on all-zero (in the backward pass: reconstructed, so
  nearly-zero) channels would blow rounding noise up to unit variance.
  """
  h = ops.average_pool(h, pool_size=2, strides=2, padding='same')
  return ops.pad(h, [[0, 0], [0, 0], [0, 0], [h.shape[-1], 0]])


def _reversible_stage(blocks, x):
  """Runs `blocks` on x with a gradient that recomputes their inputs.

  Only the stage output is kept for the backward pass. The backward walks
  the blocks from the last: from a block's output y = (y1, y2) it runs F(y1)
  once under a tape, which gives both the block's input x = (y2 - F(y1), y1)
  and, with the output gradient (dy1, dy2), its gradients: dx1 = dy2,
  dx2 = dy1 + dF/dy1^T dy2, dW = dF/dW^T dy2. Each block's recomputation is
  made to wait for the gradient coming from the block above, so in a graph
  only one block's recomputed activations are live at a time (without that
  the executor may run the whole inversion chain, which needs no gradient,
  at once and hold every block's input until its gradient arrives).
  F is recomputed with batch statistics and no moving-average update
  (`RevBlock.residual(batch_stats_only=True)`); training mode only.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  @tf.custom_gradient
  def stage(x):
    y = x
    for block in blocks:
      y = block(y, training=True)

    def grad(dy, variables=None):
      grads = {}
      y_cur = tf.stop_gradient(y)
      for block in reversed(blocks):
        c = block.channels // 2
        with tf.control_dependencies([dy]):
          y_cur = tf.identity(y_cur)
        y1, y2 = y_cur[..., :c], y_cur[..., c:]
        block_vars = [w.value if hasattr(w, 'value') else w
                      for w in block.trainable_weights]
        with tf.GradientTape() as tape:
          tape.watch(y1)
          f = block.residual(y1, batch_stats_only=True)
        dy1, dy2 = dy[..., :c], dy[..., c:]
        g = tape.gradient(f, [y1] + block_vars, output_gradients=dy2)
        for v, gv in zip(block_vars, g[1:]):
          grads[v.ref()] = gv
        dy = tf.concat([dy2, dy1 + g[0]], axis=-1)
        y_cur = tf.concat([tf.stop_gradient(y2 - f), y1], axis=-1)
      var_grads = [grads.get(v.ref()) for v in (variables or [])]
      return dy, var_grads

    return y, grad

  return stage(x)


@serialization.register
class RevNetEncoder(encoder_lib.Encoder):
  """E with a RevNet-50 trunk; outputs and head as `encoder.Encoder`.

  Args (besides `Encoder`'s):
    reversible_grad: on the TensorFlow backend, recompute activations in the
      backward pass instead of storing them (same gradient, less memory).
  """

  def __init__(self, *, reversible_grad: bool = True, **kwargs):
    self.reversible_grad = reversible_grad
    super().__init__(**kwargs)

  def _extra_args(self) -> dict:
    return {'reversible_grad': self.reversible_grad}

  def _build_trunk(self, blocks_per_stage: Sequence[int],
                   width_multiplier: float, bn: dict) -> None:
    # A multiple of 8 so both halves split into bottlenecks of C/8.
    base = max(8, 8 * int(round(32 * width_multiplier)))
    self.stem = _conv(self.fast_ops, base, 7, 2, name='stem')
    stages = []
    for s, n in enumerate(blocks_per_stage):
      stages.append([RevBlock(base * 2**s, **bn, fast_ops=self.fast_ops,
                              name=f'stage{s + 1}_block{b + 1}')
                     for b in range(n)])
    self.stage_sizes = [len(st) for st in stages]
    layers.set_layer_list(self, 'block', [b for st in stages for b in st])
    self.feature_dim = base * 2**(len(stages) - 1)

  def _stages(self) -> list:
    blocks, out = self.blocks, []
    for n in self.stage_sizes:
      out.append(blocks[:n])
      blocks = blocks[n:]
    return out

  def _trunk(self, x, training=False):
    h = self.stem(ops.cast(x, self.compute_dtype))
    h = ops.max_pool(h, pool_size=3, strides=2, padding='same')
    # Recomputing needs the batch statistics F used, hence training only; a
    # synchronised BN would need cross-replica moments in the recomputation.
    reversible = (self.reversible_grad and training
                  and keras.backend.backend() == 'tensorflow'
                  and not any(getattr(b.bn1, 'synchronized', False)
                              for b in self.blocks))
    for s, stage in enumerate(self._stages()):
      if s > 0:
        h = _pool_and_double_channels(h)
      if reversible:
        h = _reversible_stage(stage, h)
      else:
        for block in stage:
          h = block(h, training=training)
    return h
