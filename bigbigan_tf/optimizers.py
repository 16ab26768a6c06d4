"""Adam with one fused TensorFlow op per variable.

Keras 3's Adam writes its update as about twenty small ops per variable
(casts, two powers, the moment updates, the step), so the three optimisers of
an iteration add some 5,000 ops to the step graph; on a CPU each op costs
scheduling time whatever its size. TensorFlow's `ResourceApplyAdam` computes
the same update, with the same formula, in one kernel:

  lr_t = lr * sqrt(1 - beta2^t) / (1 - beta1^t)
  m += (g - m) * (1 - beta1);  v += (g^2 - v) * (1 - beta2)
  var -= lr_t * m / (sqrt(v) + epsilon)

This class keeps Keras' variables (momentums, velocities, iterations; the
same checkpoints), its configuration and its `apply_gradients`, and swaps
only the per-variable update. Keras' own update runs on other backends, for
AMSGrad, sparse gradients, or when `fused=False`.
"""

import keras


class Adam(keras.optimizers.Adam):
  """keras.optimizers.Adam; on TensorFlow one `ResourceApplyAdam` a variable.

  Args:
    fused: use the fused op where it applies (see the module docstring).
    **kwargs: keras.optimizers.Adam's arguments.
  """

  def __init__(self, *args, fused: bool = True, **kwargs):
    super().__init__(*args, **kwargs)
    self.fused = bool(fused)
    # The scalar arguments of the fused op for the apply_gradients being
    # traced: made once per apply, not once per variable.
    self._fused_scalars = None

  def get_config(self):
    return {**super().get_config(), 'fused': self.fused}

  def _uses_fused_op(self) -> bool:
    return (self.fused and not self.amsgrad
            and keras.backend.backend() == 'tensorflow')

  def _distributed_tf_update_step(self, distribution, grads_and_vars,
                                  learning_rate):
    # Keras' TensorFlow optimiser calls this once per apply (in the
    # cross-replica context under MirroredStrategy), then update_step once
    # per variable (per device).
    if not self._uses_fused_op():
      return super()._distributed_tf_update_step(distribution, grads_and_vars,
                                                 learning_rate)
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    step = tf.cast(self.iterations + 1, tf.float32)
    beta1 = tf.cast(self.beta_1, tf.float32)
    beta2 = tf.cast(self.beta_2, tf.float32)
    self._fused_scalars = dict(
        beta1_power=tf.pow(beta1, step), beta2_power=tf.pow(beta2, step),
        lr=tf.cast(learning_rate, tf.float32), beta1=beta1, beta2=beta2,
        epsilon=tf.cast(self.epsilon, tf.float32))
    try:
      return super()._distributed_tf_update_step(distribution,
                                                 grads_and_vars, learning_rate)
    finally:
      self._fused_scalars = None

  def update_step(self, gradient, variable, learning_rate):
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    if (self._fused_scalars is None or isinstance(gradient, tf.IndexedSlices)
        or tf.as_dtype(variable.dtype) != tf.float32):
      return super().update_step(gradient, variable, learning_rate)
    index = self._get_variable_index(variable)
    m = self._momentums[index].value
    v = self._velocities[index].value
    if isinstance(variable, keras.Variable):
      variable = variable.value
    # Inside Strategy.update (MirroredStrategy), `.handle` of a distributed
    # variable is its component on the device being updated.
    tf.raw_ops.ResourceApplyAdam(
        var=variable.handle, m=m.handle, v=v.handle,
        grad=tf.cast(gradient, tf.float32), **self._fused_scalars)
