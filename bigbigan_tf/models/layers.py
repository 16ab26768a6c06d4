"""Building blocks of the BigGAN / BigBiGAN networks, from `keras.ops` only.

Everything here runs on any Keras 3 backend (TensorFlow for training and
export, JAX too). Images are channels-last: [B, H, W, C]. Every convolution
and batch norm goes through a `fast_ops.FastOps` passed to the constructor
(default: plain Keras), which may compute it a faster way (same function,
same weights); the speed tricks live in `fast_ops.py`, not here.

Spectral normalisation follows Miyato et al. 2018 as BigGAN uses it: the
kernel is divided by an estimate of its largest singular value, refined by one
power iteration per training call, and the gradient flows through that
estimate (u and v held constant), as in PyTorch's `spectral_norm`. Keras' own
`SpectralNormalization` wrapper instead overwrites the kernel with W / sigma
and does not differentiate through sigma, which is a different optimiser.
"""

from typing import Optional

import keras
from keras import ops

from bigbigan_tf.models.fast_ops import FastOps
from bigbigan_tf.models.fast_ops import avgpool2x

# Orthogonal initialisation everywhere in G and D, as in BigGAN.
_ORTHO = 'orthogonal'


def set_layer_list(owner: keras.layers.Layer, name: str, items) -> None:
  """Stores layers as attributes `name_0`, `name_1`, ... of `owner`.

  Keras 3 wraps lists and dicts of layers in its own tracking containers,
  which tf.train.Checkpoint and SavedModel do not see: weights kept only in a
  list would be missing from checkpoints. Attributes are seen by both.
  """
  items = list(items)
  for i, item in enumerate(items):
    setattr(owner, f'{name}_{i}', item)
  setattr(owner, f'_{name}_count', len(items))


def get_layer_list(owner: keras.layers.Layer, name: str) -> list:
  """The layers stored by `set_layer_list`, in order."""
  return [getattr(owner, f'{name}_{i}')
          for i in range(getattr(owner, f'_{name}_count'))]


class BlockStack:
  """Mixin for G and F: a chain of residual blocks stored with
  `set_layer_list(self, 'block', ...)`, and at most one self-attention layer
  (`attention_layer`) after block `attention_after` (-1 = none)."""

  @property
  def blocks(self) -> list:
    return get_layer_list(self, 'block')


def _l2_normalize(x, eps=1e-12):
  return x / ops.sqrt(ops.maximum(ops.sum(ops.square(x)), eps))


class _SpectralNorm(keras.layers.Layer):
  """Shared machinery: a kernel, a power-iteration vector u and sigma(W)."""

  def __init__(self, *, power_iterations: int = 1, sn_epsilon: float = 1e-12,
               kernel_initializer=_ORTHO, use_bias: bool = True, **kwargs):
    super().__init__(**kwargs)
    self.power_iterations = power_iterations
    self.sn_epsilon = sn_epsilon
    self.kernel_initializer = keras.initializers.get(kernel_initializer)
    self.use_bias = use_bias

  def _build_sn(self, kernel_shape, units):
    self.kernel = self.add_weight(name='kernel', shape=kernel_shape,
                                  initializer=self.kernel_initializer)
    self.bias = (self.add_weight(name='bias', shape=(units,),
                                 initializer='zeros')
                 if self.use_bias else None)
    # u lives in the output space; it is state, not a parameter.
    self.sn_u = self.add_weight(
        name='sn_u', shape=(units,),
        initializer=keras.initializers.RandomNormal(seed=None),
        trainable=False)

  def normalized_kernel(self, training: bool = False):
    """Returns W / sigma(W) in float32; updates u when training."""
    w = ops.cast(self.kernel, 'float32')
    w_mat = ops.reshape(w, (-1, w.shape[-1]))  # [fan_in, units]
    u = ops.cast(self.sn_u, 'float32')
    for _ in range(self.power_iterations if training else 0):
      v = _l2_normalize(ops.matmul(w_mat, u), self.sn_epsilon)
      u = _l2_normalize(ops.matmul(v, w_mat), self.sn_epsilon)
    u = ops.stop_gradient(u)
    if training and self.power_iterations:
      self.sn_u.assign(u)
    return w * (1.0 / self._sigma(w_mat, u))

  def _sigma(self, w_mat, u):
    """sigma = v . W u with v = W u / |W u|, i.e. |W u|.

    Written as the norm: the same value, and with u held constant the same
    gradient (v u^T) as PyTorch's spectral_norm, in fewer ops.
    """
    wu = ops.matmul(w_mat, u)
    return ops.sqrt(ops.maximum(ops.sum(ops.square(wu)), self.sn_epsilon))

  def spectral_norm_estimate(self):
    """Current sigma(W) estimate from the stored u (no update)."""
    w_mat = ops.reshape(ops.cast(self.kernel, 'float32'),
                        (-1, self.kernel.shape[-1]))
    return self._sigma(w_mat, ops.cast(self.sn_u, 'float32'))


class SNDense(_SpectralNorm):
  """Dense layer with a spectrally normalised kernel. [..., in] -> [..., units]."""

  def __init__(self, units: int, **kwargs):
    super().__init__(**kwargs)
    self.units = units

  def build(self, input_shape):
    self._build_sn((input_shape[-1], self.units), self.units)

  def call(self, x, training=False):
    w = ops.cast(self.normalized_kernel(training), self.compute_dtype)
    y = ops.matmul(x, w)
    if self.bias is not None:
      y = y + ops.cast(self.bias, self.compute_dtype)
    return y

  def compute_output_shape(self, input_shape):
    return tuple(input_shape[:-1]) + (self.units,)


class SNConv2D(_SpectralNorm):
  """Conv2D ('same' padding, stride 1) with a spectrally normalised kernel.

  [B, H, W, in] -> [B, H, W, filters]; with resampling see `call`.
  """

  def __init__(self, filters: int, kernel_size: int = 3, *,
               fast_ops: FastOps = FastOps(), **kwargs):
    super().__init__(**kwargs)
    self.filters = filters
    self.kernel_size = kernel_size
    self.fast_ops = fast_ops

  def build(self, input_shape):
    k = self.kernel_size
    self._build_sn((k, k, input_shape[-1], self.filters), self.filters)

  def call(self, x, training=False, resample: Optional[str] = None):
    """resample=None: conv(x). 'up': conv(upsample2x(x)). 'pool':
    avgpool2x(conv(x)). Resampling takes 1x1 or 3x3 kernels."""
    w = ops.cast(self.normalized_kernel(training), self.compute_dtype)
    if resample is None:
      y = self.fast_ops.conv(x, w)
    elif resample in ('up', 'pool') and self.kernel_size in (1, 3):
      y = (self.fast_ops.upsample_conv(x, w) if resample == 'up'
           else self.fast_ops.conv_avgpool(x, w))
    else:
      raise ValueError(f'resample={resample!r} needs a 1x1 or 3x3 kernel '
                       f"and is one of None, 'up', 'pool'.")
    if self.bias is not None:
      y = y + ops.cast(self.bias, self.compute_dtype)
    return y

  def compute_output_shape(self, input_shape):
    return tuple(input_shape[:-1]) + (self.filters,)


def batch_norm(*, epsilon: float, momentum: float, affine: bool,
               fast_ops: FastOps = FastOps(), name: Optional[str] = None
               ) -> keras.layers.BatchNormalization:
  """Batch norm, synchronised across replicas when there are several.

  Unsynchronised BN lets replicas' moving statistics drift apart silently
  under MirroredStrategy, and per-replica batches can be tiny. Build the
  networks inside the strategy's scope: the replica count is read there. On
  one replica the plain moments are used (Keras' synchronised path costs a
  full-size extra tensor and three all-reduces per layer for nothing).
  """
  synchronized = False
  if keras.backend.backend() == 'tensorflow':
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    synchronized = tf.distribute.get_strategy().num_replicas_in_sync > 1
  return fast_ops.batch_norm(
      epsilon=epsilon, momentum=momentum, center=affine, scale=affine,
      synchronized=synchronized, name=name)


class ConditionalBatchNorm(keras.layers.Layer):
  """BigGAN's conditional BN: BN without affine, then (1 + gain(c)), bias(c).

  gain and bias are spectrally normalised linear maps of the condition c
  (a chunk of z, optionally joined to the learned constant embedding) with no
  bias of their own, as in BigGAN.

  Call: x [B, H, W, C], cond [B, D] -> [B, H, W, C].
  """

  def __init__(self, *, epsilon: float, momentum: float,
               fast_ops: FastOps = FastOps(), **kwargs):
    super().__init__(**kwargs)
    self.bn = batch_norm(epsilon=epsilon, momentum=momentum, affine=False,
                         fast_ops=fast_ops, name='bn')
    self.epsilon = epsilon

  def build(self, x_shape, cond_shape=None):
    channels = x_shape[-1]
    self.gain = SNDense(channels, use_bias=False, name='gain')
    self.offset = SNDense(channels, use_bias=False, name='offset')

  def call(self, x, cond, training=False):
    h = self.bn(x, training=training)
    gain = 1.0 + self.gain(cond, training=training)
    offset = self.offset(cond, training=training)
    return h * gain[:, None, None, :] + offset[:, None, None, :]


class SelfAttention(keras.layers.Layer):
  """BigGAN's non-local block with spectral norm; output = x + gamma * o.

  gamma starts at 0 so the block begins as the identity. Keys and values are
  max-pooled 2x2, as in BigGAN, to cut the attention map by 4.
  [B, H, W, C] -> [B, H, W, C], H and W even.
  """

  def __init__(self, *, fast_ops: FastOps = FastOps(), **kwargs):
    super().__init__(**kwargs)
    self.fast_ops = fast_ops

  def build(self, input_shape):
    c = input_shape[-1]
    conv = dict(kernel_size=1, use_bias=False, fast_ops=self.fast_ops)
    self.theta = SNConv2D(max(c // 8, 1), **conv, name='theta')
    self.phi = SNConv2D(max(c // 8, 1), **conv, name='phi')
    self.g = SNConv2D(max(c // 2, 1), **conv, name='g')
    self.o = SNConv2D(c, **conv, name='o')
    self.gamma = self.add_weight(name='gamma', shape=(),
                                 initializer='zeros')

  def call(self, x, training=False):
    b, h, w = ops.shape(x)[0], x.shape[1], x.shape[2]
    theta = ops.reshape(self.theta(x, training=training), (b, h * w, -1))
    pool = lambda t: ops.max_pool(t, pool_size=2, strides=2)
    phi = ops.reshape(pool(self.phi(x, training=training)),
                      (b, (h // 2) * (w // 2), -1))
    g = ops.reshape(pool(self.g(x, training=training)),
                    (b, (h // 2) * (w // 2), -1))
    attn = ops.softmax(ops.matmul(theta, ops.transpose(phi, (0, 2, 1))),
                       axis=-1)
    o = ops.reshape(ops.matmul(attn, g), (b, h, w, -1))
    o = self.o(o, training=training)
    return x + ops.cast(self.gamma, x.dtype) * o


class GBlock(keras.layers.Layer):
  """BigGAN generator block: BN-ReLU-up-conv3, BN-ReLU-conv3, + up-conv1 skip.

  Call: x [B, H, W, in], cond [B, D] -> [B, 2H, 2W, out].
  """

  def __init__(self, out_channels: int, *, bn_epsilon: float,
               bn_momentum: float, fast_ops: FastOps = FastOps(), **kwargs):
    super().__init__(**kwargs)
    self.out_channels = out_channels
    self.fast_ops = fast_ops
    bn = dict(epsilon=bn_epsilon, momentum=bn_momentum, fast_ops=fast_ops)
    self.bn1 = ConditionalBatchNorm(**bn, name='cbn1')
    self.bn2 = ConditionalBatchNorm(**bn, name='cbn2')
    self.conv1 = SNConv2D(out_channels, 3, fast_ops=fast_ops, name='conv1')
    self.conv2 = SNConv2D(out_channels, 3, fast_ops=fast_ops, name='conv2')
    self.conv_sc = SNConv2D(out_channels, 1, fast_ops=fast_ops,
                            name='conv_sc')

  def call(self, x, cond, training=False):
    h = ops.relu(self.bn1(x, cond, training=training))
    h = self.conv1(h, training=training, resample='up')
    h = ops.relu(self.bn2(h, cond, training=training))
    h = self.conv2(h, training=training)
    return h + self.conv_sc(x, training=training, resample='up')


class DBlock(keras.layers.Layer):
  """BigGAN discriminator block: (ReLU)-conv3-ReLU-conv3-(pool), + skip.

  The first block of F has no pre-activation (its input is the image). The
  skip is a 1x1 conv whenever the width changes or the block downsamples.
  [B, H, W, in] -> [B, H/2, W/2, out] (or [B, H, W, out] without downsampling).
  """

  def __init__(self, out_channels: int, *, downsample: bool,
               preactivation: bool, fast_ops: FastOps = FastOps(), **kwargs):
    super().__init__(**kwargs)
    self.out_channels = out_channels
    self.downsample = downsample
    self.preactivation = preactivation
    self.fast_ops = fast_ops
    self.conv1 = SNConv2D(out_channels, 3, fast_ops=fast_ops, name='conv1')
    self.conv2 = SNConv2D(out_channels, 3, fast_ops=fast_ops, name='conv2')

  def build(self, input_shape):
    self.learnable_sc = (input_shape[-1] != self.out_channels
                         or self.downsample)
    self.conv_sc = (SNConv2D(self.out_channels, 1, fast_ops=self.fast_ops,
                             name='conv_sc')
                    if self.learnable_sc else None)

  def call(self, x, training=False):
    resample = 'pool' if self.downsample else None
    h = ops.relu(x) if self.preactivation else x
    h = self.conv1(h, training=training)
    h = self.conv2(ops.relu(h), training=training, resample=resample)
    sc = x
    if self.learnable_sc:
      if self.downsample and not self.preactivation:
        # BigGAN pools the image before the first block's 1x1 skip conv.
        sc = self.conv_sc(avgpool2x(sc), training=training)
      else:
        sc = self.conv_sc(sc, training=training, resample=resample)
    return h + sc


class ResidualMLP(keras.layers.Layer):
  """A linear projection to `width`, then `depth` residual ReLU-linear layers.

  Used for D's H and J (spectral norm) and E's head. Returns the final hidden
  activations after a ReLU. [B, in] -> [B, width].
  """

  def __init__(self, *, width: int, depth: int, spectral_norm: bool,
               **kwargs):
    super().__init__(**kwargs)
    dense = SNDense if spectral_norm else _PlainDense
    self.proj = dense(width, name='proj')
    set_layer_list(self, 'hidden',
                   [dense(width, name=f'res{i}') for i in range(depth)])

  @property
  def hidden(self):
    return get_layer_list(self, 'hidden')

  def call(self, x, training=False):
    h = self.proj(x, training=training)
    for layer in self.hidden:
      h = h + layer(ops.relu(h), training=training)
    return ops.relu(h)


class _PlainDense(keras.layers.Dense):
  """keras Dense that accepts (and ignores) `training`, orthogonal init."""

  def __init__(self, units, **kwargs):
    kwargs.setdefault('kernel_initializer', _ORTHO)
    super().__init__(units, **kwargs)

  def call(self, x, training=False):
    del training
    return super().call(x)
