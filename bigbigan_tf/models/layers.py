"""Building blocks of the BigGAN / BigBiGAN networks, from `keras.ops` only.

Everything here runs on any Keras 3 backend (TensorFlow for training and
export, JAX too); on TensorFlow, batch norm runs TensorFlow's fused op
(`BatchNormalization`) and small 3x3 convolutions take a custom weight
gradient (`conv_same`). Images are channels-last: [B, H, W, C].

Spectral normalisation follows Miyato et al. 2018 as BigGAN uses it: the
kernel is divided by an estimate of its largest singular value, refined by one
power iteration per training call, and the gradient flows through that
estimate (u and v held constant), as in PyTorch's `spectral_norm`. Keras' own
`SpectralNormalization` wrapper instead overwrites the kernel with W / sigma
and does not differentiate through sigma, which is a different optimiser.
"""

import contextlib
from typing import Iterator, Optional

import keras
from keras import ops

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

  @property
  def attention(self) -> dict:
    """{index of the block it follows: self-attention layer} (0 or 1 entry)."""
    if self.attention_after < 0:
      return {}
    return {self.attention_after: self.attention_layer}


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

  [B, H, W, in] -> [B, H, W, filters].
  """

  def __init__(self, filters: int, kernel_size: int = 3, **kwargs):
    super().__init__(**kwargs)
    self.filters = filters
    self.kernel_size = kernel_size

  def build(self, input_shape):
    k = self.kernel_size
    self._build_sn((k, k, input_shape[-1], self.filters), self.filters)

  def call(self, x, training=False, resample: Optional[str] = None):
    """resample=None: conv(x). 'up': conv(upsample2x(x)), computed at x's
    resolution (`upsampled_conv`, 3x3 kernels only). 'pool':
    avgpool2x(conv(x)) as one stride-2 conv (`pooled_conv`, 3x3 only)."""
    w = ops.cast(self.normalized_kernel(training), self.compute_dtype)
    if resample is None and self.kernel_size == 1:
      y = pointwise_conv(x, w)
    elif resample is None:
      y = conv_same(x, w)
    elif resample == 'up' and self.kernel_size == 3:
      y = upsampled_conv(x, w)
    elif resample == 'pool' and self.kernel_size == 3:
      y = pooled_conv(x, w)
    else:
      raise ValueError(f'resample={resample!r} needs a 3x3 kernel and is '
                       f"one of None, 'up', 'pool'.")
    if self.bias is not None:
      y = y + ops.cast(self.bias, self.compute_dtype)
    return y

  def compute_output_shape(self, input_shape):
    return tuple(input_shape[:-1]) + (self.filters,)


# A strided 1x1 conv is a slice then a matmul only up to this many input
# pixels: above it the slice's gradient costs more than the matmul saves.
POINTWISE_STRIDED_MAX_PIXELS = 64


def pointwise_conv(x, w, strides: int = 1):
  """conv(x, w, strides, 'same') for a 1x1 kernel w, as one matmul.

  A 1x1 convolution is a matmul over the channels of every pixel: the same
  map, but oneDNN's matmul and its gradients run 1.4-4x faster here than its
  1x1 convolution (fwd + both grads, bf16: 4.9 vs 1.3 ms at 1x1x512 -> 1024,
  1.55 vs 0.87 ms at 8x8x128, 2.2 vs 1.5 ms at 16x16x128, batch 16-32).
  Strided, the 1x1 taps are every `strides`-th pixel from the first ('same'
  pads nothing for a 1x1 kernel); the slice's gradient is slow on large maps,
  so over POINTWISE_STRIDED_MAX_PIXELS input pixels the conv runs instead.
  Falls back to the conv when the height or width is not static.

  x [B, H, W, C], w [1, 1, C, O] -> [B, ceil(H/s), ceil(W/s), O].
  """
  height, width = x.shape[1], x.shape[2]
  channels, out = w.shape[2], w.shape[3]  # x's channels may be unknown
  if (height is None or width is None or (
      strides > 1 and height * width > POINTWISE_STRIDED_MAX_PIXELS)):
    return ops.conv(x, w, strides=strides, padding='same')
  if strides > 1:
    x = x[:, ::strides, ::strides, :]
    height, width = x.shape[1], x.shape[2]
  y = ops.matmul(ops.reshape(x, (-1, channels)),
                 ops.reshape(w, (channels, out)))
  return ops.reshape(y, (-1, height, width, out))


class Conv2D(keras.layers.Conv2D):
  """keras.layers.Conv2D whose 1x1 kernels run as matmuls (`pointwise_conv`).

  Same weights, config and checkpoints as keras.layers.Conv2D; other
  kernels, and 1x1 kernels with 'valid' padding, dilation, groups or
  channels-first data, take Keras' convolution.
  """

  def convolution_op(self, inputs, kernel):
    if (tuple(self.kernel_size) == (1, 1) and self.padding == 'same'
        and self.data_format == 'channels_last'
        and self.strides[0] == self.strides[1]
        and tuple(self.dilation_rate) == (1, 1) and self.groups == 1):
      return pointwise_conv(inputs, kernel, self.strides[0])
    return super().convolution_op(inputs, kernel)


def _upsampling_taps(w, axis: int):
  """A 3-tap kernel on a nearest-upsampled input, as 4 taps on the input.

  Even outputs 2i see input rows (i-1, i) with weights (w0, w1 + w2), odd
  outputs 2i+1 rows (i, i+1) with (w0 + w1, w2); as a stride-2 transposed
  convolution (padding 1) those are its taps in the order
  (w2, w1 + w2, w0 + w1, w0).
  """
  w0, w1, w2 = ops.unstack(w, num=3, axis=axis)
  return ops.stack([w2, w1 + w2, w0 + w1, w0], axis=axis)


def upsampled_conv(x, w):
  """conv(upsample2x(x), w, 'same') for a 3x3 kernel w, without upsampling.

  Nearest-neighbour upsampling followed by a 3x3 convolution is a stride-2
  transposed convolution of x with a 4x4 kernel whose taps are sums of w's
  (`_upsampling_taps`): 16 instead of 36 multiply-adds per input pixel and
  weight pair, the same map up to rounding. (Measured here, fwd + bwd, fp32:
  0.029 s vs 0.057 s at 16x16x128 -> 32x32, batch 16.)

  x [B, H, W, C_in], w [3, 3, C_in, C_out] -> [B, 2H, 2W, C_out].
  """
  k = _upsampling_taps(_upsampling_taps(w, 0), 1)
  # conv_transpose takes [kh, kw, C_out, C_in].
  return ops.conv_transpose(x, ops.transpose(k, (0, 1, 3, 2)), strides=2,
                            padding='same')


def pooled_conv(x, w):
  """avgpool2x(conv(x, w, 'same')) for a 3x3 kernel w, as one conv.

  Average-pooling 2x2 after a 3x3 convolution is a 4x4 convolution with
  stride 2 whose kernel is w spread over the four pooled offsets, divided by
  4: 16 instead of 36 multiply-adds per output pixel of the pooled map, the
  same map up to rounding.

  x [B, H, W, C_in], H and W even; w [3, 3, C_in, C_out]
  -> [B, H/2, W/2, C_out].
  """
  k = sum(ops.pad(w, ((a, 1 - a), (b, 1 - b), (0, 0), (0, 0)))
          for a in range(2) for b in range(2)) * 0.25
  # The conv needs one pixel of zeros on each side; for a 4x4 kernel at
  # stride 2 on an even size that is exactly 'same' padding, which the conv
  # does itself (no padded copy of x, and no slicing of its gradient).
  if any(side is not None and side % 2 for side in x.shape[1:3]):
    raise ValueError(f'pooled_conv needs an even height and width, got '
                     f'{tuple(x.shape)}.')
  return ops.conv(x, ops.cast(k, x.dtype), strides=2, padding='same')


# 3x3 stride-1 convolutions whose output has at most this many pixels take
# the per-tap filter gradient (`_tf_conv_tapped_filter_grad`). Measured here
# (bf16, batch 32, 128 channels), oneDNN's filter gradient vs the matmuls: at
# 8x8 3.9 vs 2.5 ms, at 16x16 7.6 vs 8.6 ms (so not there); in-process A/B of
# the whole biggan32 bf16 iteration, without it: 1.031x (median per-round
# ratio) and 1.069x (ratio of medians) the time, two runs of 24 rounds. The
# same for pooled_conv's 4x4 stride-2 kernel (as four space_to_depth
# matmuls; 7.6 vs 4.2 ms alone at 16x16 -> 8x8) was slower in the iteration
# (1.039x), so pooled_conv keeps oneDNN's.
TAPPED_FILTER_GRAD_MAX_PIXELS = 64


def _tensorflow_backend() -> bool:
  return keras.backend.backend() == 'tensorflow'


def conv_same(x, w):
  """conv(x, w, stride 1, 'same'); on TensorFlow, small 3x3 ones take the
  per-tap filter gradient (TAPPED_FILTER_GRAD_MAX_PIXELS)."""
  if (_tensorflow_backend() and tuple(w.shape[:2]) == (3, 3)
      and None not in x.shape[1:3]
      and x.shape[1] * x.shape[2] <= TAPPED_FILTER_GRAD_MAX_PIXELS):
    return _tf_conv_tapped_filter_grad(x, w)
  return ops.conv(x, w, strides=1, padding='same')


def _tf_conv_tapped_filter_grad(x, k):
  """TensorFlow's conv(x, k, 1, 'same') for a 3x3 k, its filter gradient as
  per-tap matmuls.

  The gradient of kernel tap (a, b) is (x padded by one, shifted by (a, b))^T
  dy, summed over batch and pixels: nine matmuls. The input gradient is
  TensorFlow's. The same values up to rounding; faster than oneDNN's filter
  gradient on small maps (TAPPED_FILTER_GRAD_MAX_PIXELS).

  x [B, H, W, C], k [3, 3, C, O] -> [B, H, W, O].
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  @tf.custom_gradient
  def conv(x, k):
    y = tf.nn.conv2d(x, k, 1, 'SAME')

    def grad(dy):
      dx = tf.raw_ops.Conv2DBackpropInput(
          input_sizes=tf.shape(x), filter=k, out_backprop=dy,
          strides=[1, 1, 1, 1], padding='SAME')
      c, o = k.shape[2], k.shape[3]
      h, w = x.shape[1], x.shape[2]
      flat_dy = tf.reshape(dy, (-1, o))
      xp = tf.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
      dk = tf.stack([
          tf.matmul(tf.reshape(xp[:, a:a + h, b:b + w, :], (-1, c)), flat_dy,
                    transpose_a=True)
          for a in range(3) for b in range(3)], 0)
      return dx, tf.reshape(dk, (3, 3, c, o))

    return y, grad

  return conv(x, k)


def batch_norm(*, epsilon: float, momentum: float, affine: bool,
               name: Optional[str] = None) -> 'BatchNormalization':
  """Batch norm, synchronised across replicas when there are several.

  Unsynchronised BN lets replicas' moving statistics drift apart silently
  under MirroredStrategy, and per-replica batches can be tiny. Build the
  networks inside the strategy's scope: the replica count is read there. On
  one replica the plain moments are used (Keras' synchronised path costs a
  full-size extra tensor and three all-reduces per layer for nothing).
  """
  synchronized = False
  if _tensorflow_backend():
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    synchronized = tf.distribute.get_strategy().num_replicas_in_sync > 1
  return BatchNormalization(
      epsilon=epsilon, momentum=momentum, center=affine, scale=affine,
      synchronized=synchronized, fused=_FUSED_BATCH_NORM[-1], name=name)


_FUSED_BATCH_NORM = [True]


@contextlib.contextmanager
def fused_batch_norm(enabled: bool) -> Iterator[None]:
  """Batch norms made by `batch_norm` inside this block use the fused op
  (config.model.fused_batch_norm) or, with False, Keras' own ops."""
  _FUSED_BATCH_NORM.append(bool(enabled))
  try:
    yield
  finally:
    _FUSED_BATCH_NORM.pop()


class BatchNormalization(keras.layers.BatchNormalization):
  """Keras' batch norm, computed by one fused op on TensorFlow.

  Keras 3 spells batch norm out as moments, then scale and shift, in float32
  (a dozen ops forward, more backward). On the TensorFlow backend this layer
  runs TensorFlow's fused kernel (FusedBatchNormV3: oneDNN on CPU, cuDNN on
  GPU, XLA on TPU) instead: the same map (biased batch variance, the same
  moving-average update, the same variables and checkpoints), measured here
  2-3x faster forward + backward than Keras' ops (16x32x32x128: 9.3 vs
  19.9 ms fp32, 11.2 vs 25.6 ms bf16). Keras' own path is kept where the
  fused op does not fit: other backends, synchronised (cross-replica)
  statistics, masks, renorm, a normalised axis other than the last, inputs
  other than rank 2 or 4, or `fused=False`.
  """

  def __init__(self, *args, fused: bool = True, **kwargs):
    super().__init__(*args, **kwargs)
    self.fused = fused

  def get_config(self):
    return {**super().get_config(), 'fused': self.fused}

  def _fusable(self, inputs, mask) -> bool:
    rank = len(inputs.shape)
    return (self.fused and _tensorflow_backend()
            and not self.synchronized and mask is None and not self.renorm
            and rank in (2, 4) and self.axis in (-1, rank - 1))

  def call(self, inputs, training=None, mask=None):
    if not self._fusable(inputs, mask):
      return super().call(inputs, training=training, mask=mask)
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    x = inputs
    if len(x.shape) == 2:
      x = x[:, None, None, :]
    # The fused op takes bfloat16 / float16 / float32 images with float32
    # statistics and parameters.
    if x.dtype not in (tf.bfloat16, tf.float16, tf.float32):
      x = tf.cast(x, tf.float32)
    channels = x.shape[-1]
    gamma = (tf.cast(self.gamma, tf.float32) if self.scale
             else tf.ones([channels], tf.float32))
    beta = (tf.cast(self.beta, tf.float32) if self.center
            else tf.zeros([channels], tf.float32))
    if training and self.trainable:
      y, mean, variance, _, _, _ = tf.raw_ops.FusedBatchNormV3(
          x=x, scale=gamma, offset=beta, mean=tf.zeros([0], tf.float32),
          variance=tf.zeros([0], tf.float32), epsilon=self.epsilon,
          exponential_avg_factor=1.0, data_format='NHWC', is_training=True)
      # The op returns the unbiased (n - 1) batch variance for the moving
      # average (it normalises with the biased one); Keras averages the
      # biased variance.
      n = tf.cast(tf.size(x) // channels, tf.float32)
      variance = variance * ((n - 1.0) / tf.maximum(n, 1.0))
      self.moving_mean.assign(self.moving_mean * self.momentum
                              + mean * (1.0 - self.momentum))
      self.moving_variance.assign(self.moving_variance * self.momentum
                                  + variance * (1.0 - self.momentum))
    else:
      y, _, _, _, _, _ = tf.raw_ops.FusedBatchNormV3(
          x=x, scale=gamma, offset=beta,
          mean=tf.cast(self.moving_mean, tf.float32),
          variance=tf.cast(self.moving_variance, tf.float32),
          epsilon=self.epsilon, exponential_avg_factor=1.0,
          data_format='NHWC', is_training=False)
    if len(inputs.shape) == 2:
      y = y[:, 0, 0, :]
    return tf.cast(y, self.compute_dtype)


class ConditionalBatchNorm(keras.layers.Layer):
  """BigGAN's conditional BN: BN without affine, then (1 + gain(c)), bias(c).

  gain and bias are spectrally normalised linear maps of the condition c
  (a chunk of z, optionally joined to the learned constant embedding) with no
  bias of their own, as in BigGAN.

  Call: x [B, H, W, C], cond [B, D] -> [B, H, W, C].
  """

  def __init__(self, *, epsilon: float, momentum: float, **kwargs):
    super().__init__(**kwargs)
    self.bn = batch_norm(epsilon=epsilon, momentum=momentum, affine=False,
                         name='bn')
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

  def build(self, input_shape):
    c = input_shape[-1]
    self.theta = SNConv2D(max(c // 8, 1), 1, use_bias=False, name='theta')
    self.phi = SNConv2D(max(c // 8, 1), 1, use_bias=False, name='phi')
    self.g = SNConv2D(max(c // 2, 1), 1, use_bias=False, name='g')
    self.o = SNConv2D(c, 1, use_bias=False, name='o')
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


def upsample2x(x):
  """Nearest-neighbour 2x upsampling. [B, H, W, C] -> [B, 2H, 2W, C]."""
  return ops.repeat(ops.repeat(x, 2, axis=1), 2, axis=2)


def avgpool2x(x):
  """2x2 average pooling. [B, H, W, C] -> [B, H/2, W/2, C]."""
  return ops.average_pool(x, pool_size=2, strides=2, padding='valid')


class GBlock(keras.layers.Layer):
  """BigGAN generator block: BN-ReLU-up-conv3, BN-ReLU-conv3, + up-conv1 skip.

  Call: x [B, H, W, in], cond [B, D] -> [B, 2H, 2W, out].
  """

  def __init__(self, out_channels: int, *, bn_epsilon: float,
               bn_momentum: float, fused_resampling: bool = True,
               fused_min_size: int = 1, **kwargs):
    super().__init__(**kwargs)
    self.out_channels = out_channels
    self.fused_resampling = fused_resampling
    # Fused only from this input size up (`fuses`).
    self.fused_min_size = fused_min_size
    bn = dict(epsilon=bn_epsilon, momentum=bn_momentum)
    self.bn1 = ConditionalBatchNorm(**bn, name='cbn1')
    self.bn2 = ConditionalBatchNorm(**bn, name='cbn2')
    self.conv1 = SNConv2D(out_channels, 3, name='conv1')
    self.conv2 = SNConv2D(out_channels, 3, name='conv2')
    self.conv_sc = SNConv2D(out_channels, 1, name='conv_sc')

  def fuses(self, input_size: int) -> bool:
    """Whether the block on [B, input_size, ., .] uses the fused ops."""
    return self.fused_resampling and (input_size is None
                                      or input_size >= self.fused_min_size)

  def call(self, x, cond, training=False):
    h = ops.relu(self.bn1(x, cond, training=training))
    if self.fuses(x.shape[1]):
      # The same map with fewer FLOPs: conv1 at the input resolution, and
      # the 1x1 skip before upsampling (the two commute).
      h = self.conv1(h, training=training, resample='up')
      sc = upsample2x(self.conv_sc(x, training=training))
    else:
      h = self.conv1(upsample2x(h), training=training)
      sc = self.conv_sc(upsample2x(x), training=training)
    h = ops.relu(self.bn2(h, cond, training=training))
    h = self.conv2(h, training=training)
    return h + sc


class DBlock(keras.layers.Layer):
  """BigGAN discriminator block: (ReLU)-conv3-ReLU-conv3-(pool), + skip.

  The first block of F has no pre-activation (its input is the image). The
  skip is a 1x1 conv whenever the width changes or the block downsamples.
  [B, H, W, in] -> [B, H/2, W/2, out] (or [B, H, W, out] without downsampling).
  """

  def __init__(self, out_channels: int, *, downsample: bool,
               preactivation: bool, fused_resampling: bool = True,
               fused_min_size: int = 1, **kwargs):
    super().__init__(**kwargs)
    self.out_channels = out_channels
    self.downsample = downsample
    self.preactivation = preactivation
    self.fused_resampling = fused_resampling
    # Fused only if the pooled output is at least this size (`fuses`).
    self.fused_min_size = fused_min_size
    self.conv1 = SNConv2D(out_channels, 3, name='conv1')
    self.conv2 = SNConv2D(out_channels, 3, name='conv2')

  def build(self, input_shape):
    self.learnable_sc = (input_shape[-1] != self.out_channels
                         or self.downsample)
    self.conv_sc = (SNConv2D(self.out_channels, 1, name='conv_sc')
                    if self.learnable_sc else None)

  def fuses(self, input_size: int) -> bool:
    """Whether the block on [B, input_size, ., .] uses the fused ops."""
    return (self.downsample and self.fused_resampling
            and (input_size is None
                 or input_size // 2 >= self.fused_min_size))

  def call(self, x, training=False):
    fused = self.fuses(x.shape[1])
    h = ops.relu(x) if self.preactivation else x
    h = self.conv1(h, training=training)
    if fused:
      # conv2 then pooling as one stride-2 conv: the same map, fewer FLOPs.
      h = self.conv2(ops.relu(h), training=training, resample='pool')
    else:
      h = self.conv2(ops.relu(h), training=training)
      if self.downsample:
        h = avgpool2x(h)
    sc = x
    if self.learnable_sc:
      # Pooling before the 1x1 conv is the same map and 4x cheaper; BigGAN
      # does it in that order when there is no pre-activation.
      if self.downsample and (fused or not self.preactivation):
        sc = self.conv_sc(avgpool2x(sc), training=training)
      else:
        sc = self.conv_sc(sc, training=training)
        if self.downsample:
          sc = avgpool2x(sc)
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
