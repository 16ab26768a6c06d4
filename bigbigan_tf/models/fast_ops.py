"""Speed tricks: faster ways to compute the networks' own operations.

Every trick here computes the same function as the plain Keras operation it
replaces (equal up to float rounding), with the same weights and
checkpoints; only the speed differs, and it differs by device (see
docs/performance.md). `FastOps` says which tricks are on; the layers in
`layers.py` call its methods for every convolution, resampling convolution
and batch norm, and it picks the trick or the plain op:

  fused_resampling    conv3x3(upsample2x(x)) as one stride-2 transposed 4x4
                      conv at x's resolution, and avgpool2x(conv3x3(x)) as
                      one stride-2 4x4 conv (`upsampled_conv`, `pooled_conv`);
                      1x1 skips resampled on the cheaper side.
  fused_batch_norm    batch norm as TensorFlow's FusedBatchNormV3
                      (`FusedBatchNormalization`).
  pointwise_matmul    1x1 convolutions as one matmul (`pointwise_conv`,
                      `PointwiseConv2D`).
  tapped_filter_grad  the weight gradient of small 3x3 convolutions as nine
                      per-tap matmuls (`tapped_filter_grad_conv`).

`FastOps.plain()` turns every trick off (the plain Keras path);
`FastOps.from_config(config.model, hardware.switch)` settles the config's
'auto' switches for this machine (bigbigan_tf/hardware.py). On backends other
than TensorFlow the TensorFlow-only tricks (fused batch norm, tapped filter
gradient) fall back to the plain op.
"""

import dataclasses
from typing import Any, Callable, Optional

import keras
from keras import ops

# FastOps fields that are on/off switches, and the config field of each.
SWITCH_FIELDS = ('fused_resampling', 'fused_batch_norm', 'pointwise_matmul',
                 'tapped_filter_grad')
# FastOps fields that are size thresholds (integers >= 0, in pixels).
THRESHOLD_FIELDS = ('fused_resampling_min_size',
                    'pointwise_strided_max_pixels',
                    'tapped_filter_grad_max_pixels')


def _tensorflow_backend() -> bool:
  return keras.backend.backend() == 'tensorflow'


def upsample2x(x):
  """Nearest-neighbour 2x upsampling. [B, H, W, C] -> [B, 2H, 2W, C]."""
  return ops.repeat(ops.repeat(x, 2, axis=1), 2, axis=2)


def avgpool2x(x):
  """2x2 average pooling. [B, H, W, C] -> [B, H/2, W/2, C]."""
  return ops.average_pool(x, pool_size=2, strides=2, padding='valid')


@dataclasses.dataclass(frozen=True)
class FastOps:
  """Which speed tricks the networks use, with their size thresholds.

  Attributes:
    fused_resampling: resampling convolutions fused (`upsampled_conv`,
      `pooled_conv`, 1x1 skips resampled on the low-resolution side).
    fused_resampling_min_size: ... only where the low-resolution side of the
      resampling is at least this many pixels wide.
    fused_batch_norm: batch norms as TensorFlow's fused op.
    pointwise_matmul: 1x1 convolutions as matmuls.
    pointwise_strided_max_pixels: ... strided ones only up to this many input
      pixels (above it the slice's gradient costs more than the matmul saves).
    tapped_filter_grad: small 3x3 stride-1 convolutions take the per-tap
      filter gradient.
    tapped_filter_grad_max_pixels: ... up to this many output pixels.
  """
  fused_resampling: bool = False
  fused_resampling_min_size: int = 8
  fused_batch_norm: bool = False
  pointwise_matmul: bool = False
  pointwise_strided_max_pixels: int = 64
  tapped_filter_grad: bool = False
  tapped_filter_grad_max_pixels: int = 64

  def __post_init__(self):
    for name in SWITCH_FIELDS:
      value = getattr(self, name)
      if not isinstance(value, bool):
        raise ValueError(f'FastOps.{name} = {value!r} must be True or False; '
                         "resolve 'auto' with FastOps.from_config(model, "
                         'hardware.switch).')
    for name in THRESHOLD_FIELDS:
      value = getattr(self, name)
      if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f'FastOps.{name} = {value!r} must be an integer '
                         '>= 0 (pixels).')

  @classmethod
  def plain(cls) -> 'FastOps':
    """Every trick off: Keras' own operations, in the paper's order."""
    return cls()

  @classmethod
  def every_trick(cls, **thresholds) -> 'FastOps':
    """Every trick on, with the default thresholds or those given."""
    return cls(**{name: True for name in SWITCH_FIELDS}, **thresholds)

  @classmethod
  def from_config(cls, model_config,
                  switch: Optional[Callable[[Any, str], bool]] = None
                  ) -> 'FastOps':
    """The tricks `config.model` asks for, 'auto' settled by `switch`.

    Args:
      model_config: the `model` section of a config (configs/base.py).
      switch: (value, 'model.FIELD') -> on?, e.g. `hardware.switch` for this
        machine; None: the switches must be booleans already (a resolved
        config, `hardware.resolve(config).config`).
    """
    switches = {
        name: (switch(model_config[name], f'model.{name}') if switch
               else model_config[name])
        for name in SWITCH_FIELDS}
    thresholds = {name: model_config[name] for name in THRESHOLD_FIELDS}
    return cls(**switches, **thresholds)

  def in_use(self) -> list[str]:
    """Names of the tricks that are on (for logs)."""
    return [name for name in SWITCH_FIELDS if getattr(self, name)]

  # ------------------------------------------------------------ convolutions

  def conv(self, x, w):
    """conv(x, w, stride 1, 'same'). x [B, H, W, C], w [k, k, C, O]."""
    if tuple(w.shape[:2]) == (1, 1):
      return self.conv1x1(x, w)
    if tuple(w.shape[:2]) == (3, 3):
      return self.conv3x3(x, w)
    return ops.conv(x, w, strides=1, padding='same')

  def conv1x1(self, x, w, strides: int = 1):
    """conv(x, w, strides, 'same') for a 1x1 kernel w [1, 1, C, O]."""
    if self.pointwise_matmul:
      return pointwise_conv(x, w, strides, self.pointwise_strided_max_pixels)
    return ops.conv(x, w, strides=strides, padding='same')

  def conv3x3(self, x, w):
    """conv(x, w, stride 1, 'same') for a 3x3 kernel w [3, 3, C, O]."""
    if (self.tapped_filter_grad and _tensorflow_backend()
        and None not in x.shape[1:3]
        and x.shape[1] * x.shape[2] <= self.tapped_filter_grad_max_pixels):
      return tapped_filter_grad_conv(x, w)
    return ops.conv(x, w, strides=1, padding='same')

  def fuses_upsampling(self, input_size: Optional[int]) -> bool:
    """Whether conv(upsample2x(x)) on [B, input_size, ., .] runs fused."""
    return self.fused_resampling and (
        input_size is None or input_size >= self.fused_resampling_min_size)

  def fuses_pooling(self, input_size: Optional[int]) -> bool:
    """Whether avgpool2x(conv(x)) on [B, input_size, ., .] runs fused."""
    return self.fused_resampling and (
        input_size is None
        or input_size // 2 >= self.fused_resampling_min_size)

  def upsample_conv(self, x, w):
    """conv(upsample2x(x), w, 'same') for a 3x3 or 1x1 kernel w.

    [B, H, W, C] -> [B, 2H, 2W, O].
    """
    fused = self.fuses_upsampling(x.shape[1])
    if tuple(w.shape[:2]) == (1, 1):
      # A 1x1 conv commutes with upsampling: fused, it runs on 4x fewer pixels.
      return (upsample2x(self.conv1x1(x, w)) if fused
              else self.conv1x1(upsample2x(x), w))
    _check_3x3(w, 'upsample_conv')
    return upsampled_conv(x, w) if fused else self.conv3x3(upsample2x(x), w)

  def conv_avgpool(self, x, w):
    """avgpool2x(conv(x, w, 'same')) for a 3x3 or 1x1 kernel w.

    [B, H, W, C], H and W even -> [B, H/2, W/2, O].
    """
    fused = self.fuses_pooling(x.shape[1])
    if tuple(w.shape[:2]) == (1, 1):
      # A 1x1 conv commutes with average pooling: fused, pool first.
      return (self.conv1x1(avgpool2x(x), w) if fused
              else avgpool2x(self.conv1x1(x, w)))
    _check_3x3(w, 'conv_avgpool')
    return pooled_conv(x, w) if fused else avgpool2x(self.conv3x3(x, w))

  def conv2d(self, filters: int, kernel_size: int, **kwargs
             ) -> keras.layers.Conv2D:
    """A keras.layers.Conv2D, or one whose 1x1 kernels run as matmuls.

    The same weights and checkpoints either way (`PointwiseConv2D`).
    """
    if self.pointwise_matmul:
      return PointwiseConv2D(
          filters, kernel_size,
          strided_max_pixels=self.pointwise_strided_max_pixels, **kwargs)
    return keras.layers.Conv2D(filters, kernel_size, **kwargs)

  # ------------------------------------------------------------ batch norm

  def batch_norm(self, **kwargs) -> keras.layers.BatchNormalization:
    """A keras.layers.BatchNormalization(**kwargs), fused where on.

    The same variables and checkpoints either way
    (`FusedBatchNormalization`).
    """
    if self.fused_batch_norm and _tensorflow_backend():
      return FusedBatchNormalization(**kwargs)
    return keras.layers.BatchNormalization(**kwargs)


def _check_3x3(w, what: str) -> None:
  if tuple(w.shape[:2]) != (3, 3):
    raise ValueError(f'{what} takes a 3x3 or 1x1 kernel, got '
                     f'{tuple(w.shape[:2])}.')


# ---------------------------------------------------------------- 1x1 as matmul


def pointwise_conv(x, w, strides: int = 1, strided_max_pixels: int = 64):
  """conv(x, w, strides, 'same') for a 1x1 kernel w, as one matmul.

  A 1x1 convolution is a matmul over the channels of every pixel: the same
  map, and oneDNN's matmul and its gradients beat its 1x1 convolution on CPUs
  (docs/performance.md). Strided, the 1x1 taps are every `strides`-th pixel
  from the first ('same' pads nothing for a 1x1 kernel); the slice's gradient
  is slow on large maps, so above `strided_max_pixels` input pixels the conv
  runs instead. Falls back to the conv when the height or width is not static.

  x [B, H, W, C], w [1, 1, C, O] -> [B, ceil(H/s), ceil(W/s), O].
  """
  height, width = x.shape[1], x.shape[2]
  channels, out = w.shape[2], w.shape[3]  # x's channels may be unknown
  if (height is None or width is None or (
      strides > 1 and height * width > strided_max_pixels)):
    return ops.conv(x, w, strides=strides, padding='same')
  if strides > 1:
    x = x[:, ::strides, ::strides, :]
    height, width = x.shape[1], x.shape[2]
  y = ops.matmul(ops.reshape(x, (-1, channels)),
                 ops.reshape(w, (channels, out)))
  return ops.reshape(y, (-1, height, width, out))


class PointwiseConv2D(keras.layers.Conv2D):
  """keras.layers.Conv2D whose 1x1 kernels run as matmuls (`pointwise_conv`).

  Same weights, variables and checkpoints as keras.layers.Conv2D; other
  kernels, and 1x1 kernels with 'valid' padding, dilation, groups or
  channels-first data, take Keras' convolution.
  """

  def __init__(self, *args, strided_max_pixels: int = 64, **kwargs):
    super().__init__(*args, **kwargs)
    self.strided_max_pixels = strided_max_pixels

  def get_config(self):
    return {**super().get_config(),
            'strided_max_pixels': self.strided_max_pixels}

  def convolution_op(self, inputs, kernel):
    if (tuple(self.kernel_size) == (1, 1) and self.padding == 'same'
        and self.data_format == 'channels_last'
        and self.strides[0] == self.strides[1]
        and tuple(self.dilation_rate) == (1, 1) and self.groups == 1):
      return pointwise_conv(inputs, kernel, self.strides[0],
                            self.strided_max_pixels)
    return super().convolution_op(inputs, kernel)


# ---------------------------------------------------------------- resampling


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
  weight pair, the same map up to rounding.

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


# ---------------------------------------------------------------- 3x3 filter grad


def tapped_filter_grad_conv(x, k):
  """TensorFlow's conv(x, k, 1, 'same') for a 3x3 k, its filter gradient as
  per-tap matmuls.

  The gradient of kernel tap (a, b) is (x padded by one, shifted by (a, b))^T
  dy, summed over batch and pixels: nine matmuls. The input gradient is
  TensorFlow's. The same values up to rounding; on small maps faster than
  oneDNN's filter gradient (docs/performance.md). TensorFlow backend only.

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


# ---------------------------------------------------------------- batch norm


class FusedBatchNormalization(keras.layers.BatchNormalization):
  """Keras' batch norm, computed by one fused op on TensorFlow.

  Keras 3 spells batch norm out as moments, then scale and shift, in float32
  (a dozen ops forward, more backward). On the TensorFlow backend this layer
  runs TensorFlow's fused kernel (FusedBatchNormV3: oneDNN on CPU, cuDNN on
  GPU, XLA on TPU) instead: the same map (biased batch variance, the same
  moving-average update, the same variables and checkpoints). Keras' own path
  is kept where the fused op does not fit: other backends, synchronised
  (cross-replica) statistics, masks, renorm, a normalised axis other than the
  last, or inputs other than rank 2 or 4.
  """

  def _fusable(self, inputs, mask) -> bool:
    rank = len(inputs.shape)
    return (_tensorflow_backend()
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
