"""The compiled training step of BigBiGAN under a tf.distribute strategy.

One iteration = `optim.disc_iters` D steps (each on a fresh real batch), then
one E/G step (on the last real batch), as in BigGAN's alternating schedule;
with `optim.grad_accum_steps = k` each step sums the gradients of k
micro-batches before its one update. `train.steps_per_loop` iterations run
inside one `tf.function` call through `tf.range`, which checks a host-side stop
flag before each iteration (`preemption.StopSignal` sets it).
"""

from absl import logging
import tensorflow as tf

from bigbigan_tf import checkpoints
from bigbigan_tf import losses
from bigbigan_tf.models import ops


def metric_names() -> list[str]:
  """Names of the metrics one training iteration reports."""
  names = ['d_loss', 'eg_loss', 'g_ortho_reg']
  for head in losses.HEADS:
    names += [f'd_loss_{head}', f'eg_loss_{head}', f'd/real_{head}',
              f'd/fake_{head}']
  return names


def _ema_decay(config, step: tf.Tensor) -> tf.Tensor:
  """BigGAN: the average copies the weights until `ema_start`."""
  return tf.where(step >= config.train.ema_start,
                  tf.constant(config.train.ema_decay, tf.float32), 0.0)


def _dense(grads):
  """Gradients as dense tensors (None, for a variable that got none, kept)."""
  return [None if g is None else tf.convert_to_tensor(g) for g in grads]


def _add(a, b):
  """a + b, where None (no gradient) counts as zero."""
  return b if a is None else a if b is None else a + b


class Trainer:
  """Builds the compiled training loop for a TrainState under a strategy."""

  def __init__(self, state: checkpoints.TrainState, strategy: tf.distribute.Strategy):
    self.state, self.strategy = state, strategy
    self.config = state.config
    jit = self.config.train.jit_compile
    # No autograph inside the steps: their Python control flow is static, and
    # converting every Keras layer call makes tracing several times slower.
    self._d_step = tf.function(self._d_step_fn, jit_compile=jit,
                               autograph=False)
    self._eg_step = tf.function(self._eg_step_fn, jit_compile=jit,
                                autograph=False)
    self._d_then_eg_step = tf.function(self._d_then_eg_step_fn,
                                       jit_compile=jit, autograph=False)
    self.train_loop = tf.function(self._train_loop)
    # Read by the loop before every iteration (`preemption.StopSignal`), and counted up
    # by it so the main thread can see progress inside a call. On the host,
    # outside any strategy scope: build the Trainer outside strategy.scope().
    with tf.init_scope(), tf.device('CPU:0'):
      self.stop_requested = tf.Variable(False, trainable=False,
                                        name='stop_requested')
      self.steps_in_call = tf.Variable(0, dtype=tf.int64, trainable=False,
                                       name='steps_in_call')
    # Fusing the last D step with the E/G step keeps E's and G's forward
    # activations taped through D's update; with k micro-batches it would
    # keep all k alive, which is what accumulation is there to avoid.
    self._fuse_d_and_eg = self.config.optim.eg_reuses_d_forward
    if self._fuse_d_and_eg and self.config.optim.grad_accum_steps > 1:
      self._fuse_d_and_eg = False
      logging.info('optim.eg_reuses_d_forward is skipped with '
                   'optim.grad_accum_steps = %d: the E/G step recomputes E(x) '
                   'and G(z) one micro-batch at a time.',
                   self.config.optim.grad_accum_steps)

  def _scores(self, x, z_hat, x_fake, z):
    """D on real pairs (x, E(x)) and fake pairs (G(z), z) in one call.

    D has no batch norm, so one call on the concatenation equals two calls.
    """
    d = self.state.nets.discriminator
    scores = d(tf.concat([x, x_fake], 0), tf.concat([z_hat, z], 0),
               training=True)
    n = tf.shape(x)[0]
    real = {k: v[:n] for k, v in scores.items()}
    fake = {k: v[n:] for k, v in scores.items()}
    return real, fake

  def _inputs(self, batch):
    s = self.state
    x_e = batch['image']
    b = tf.shape(x_e)[0]
    g = s.nets.generator
    z = s.rng.normal([b, g.z_dim])
    noise = s.rng.normal([b, s.nets.encoder.z_dim])
    x = ops.downsample_to(x_e, g.resolution)
    return x_e, x, z, noise

  def _score_means(self, prefix, real, fake, batch):
    out = {}
    for head in losses.HEADS:
      out[f'{prefix}real_{head}'] = tf.reduce_sum(real[head]) / batch
      out[f'{prefix}fake_{head}'] = tf.reduce_sum(fake[head]) / batch
    return out

  def _micro_batches(self, *tensors):
    """Splits per-replica tensors into `optim.grad_accum_steps` slices.

    Returns a list of k tuples; k = 1 returns the tensors themselves.
    """
    k = self.config.optim.grad_accum_steps
    if k == 1:
      return [tensors]
    return list(zip(*(tf.split(t, k, axis=0) for t in tensors)))

  def _accumulate(self, micro_batches, grads_fn):
    """Sums `grads_fn`'s gradients and metrics over the micro-batches.

    The micro-batches run one after another: each one's inputs wait for the
    previous one's gradients, so only one micro-batch's activations are alive
    at a time (tf.function would otherwise be free to run them side by side).
    A static Python loop, not tf.range: the replica function may hold
    cross-replica batch-norm all-reduces, which a nested while loop cannot
    hold under MirroredStrategy; tracing time grows with k.

    Args:
      micro_batches: a list of tuples of tensors (`_micro_batches`).
      grads_fn: (*micro_batch) -> (list of gradients, {name: scalar}).

    Returns:
      (summed gradients, summed metrics).
    """
    total_grads, total_metrics = None, None
    for micro in micro_batches:
      if total_grads is not None:
        with tf.control_dependencies(
            [g for g in total_grads if g is not None]):
          micro = [tf.identity(t) for t in micro]
      grads, metrics = grads_fn(*micro)
      if total_grads is None:
        total_grads, total_metrics = list(grads), dict(metrics)
      else:
        total_grads = [_add(a, b) for a, b in zip(total_grads, grads)]
        total_metrics = {k: v + metrics[k] for k, v in total_metrics.items()}
    return total_grads, total_metrics

  def _d_grads(self, x, z_hat, x_fake, z):
    """D's gradients and metrics on real pairs (x, z_hat), fake (x_fake, z).

    Losses and score means are divided by the global batch, so the sums
    over micro-batches (and replicas) are the full batch's.
    """
    s, gb = self.state, self.config.batch_size
    with tf.GradientTape() as tape:
      real, fake = self._scores(x, tf.stop_gradient(z_hat),
                                tf.stop_gradient(x_fake), z)
      loss, per_head = losses.discriminator_loss(real, fake,
                                                 global_batch_size=gb)
    grads = _dense(tape.gradient(loss, s.d_vars))
    return grads, {'d_loss': loss, **per_head,
                   **self._score_means('d/', real, fake, gb)}

  def _d_update(self, x, z_hat, x_fake, z):
    """One D step on real pairs (x, z_hat) and fake pairs (x_fake, z).

    With `optim.grad_accum_steps` = k the pairs are cut into k slices whose
    gradients are summed before the one update: D has no batch norm, so
    this equals the update on the whole batch.
    """
    s = self.state
    grads, metrics = self._accumulate(
        self._micro_batches(x, z_hat, x_fake, z), self._d_grads)
    s.d_opt.apply_gradients(zip(grads, s.d_vars))
    return metrics

  def _eg_losses(self, x, z_hat, x_fake, z):
    """E/G losses; call under a tape that recorded z_hat = E(x), G(z)."""
    s, gb = self.state, self.config.batch_size
    # Two calls here, not one on the concatenation: no gradient is asked
    # of D's weights, so the backward pass then skips F on the real images
    # (they lead to neither E nor G): half of F's backward in this step.
    d = s.nets.discriminator
    real = d(x, z_hat, training=True)
    fake = d(x_fake, z, training=True)
    loss, per_head = losses.encoder_generator_loss(real, fake,
                                                   global_batch_size=gb)
    return loss, {'eg_loss': loss, **per_head}

  def _ortho(self):
    """G's orthogonal regulariser, this replica's share (once per update)."""
    ortho = losses.orthogonal_regularization(
        self.state.g_vars, weight=self.config.optim.g_ortho_reg)
    # Replicas' gradients are summed: share the regulariser among them.
    return ortho, ortho / self.strategy.num_replicas_in_sync

  def _eg_grads(self, x_e, x, z, noise):
    """E's and G's gradients of the E/G loss on one micro-batch."""
    s = self.state
    with tf.GradientTape() as tape:
      z_hat, x_fake = self._forward(x_e, z, noise)
      loss, metrics = self._eg_losses(x, z_hat, x_fake, z)
    grads = _dense(tape.gradient(loss, s.g_vars + s.e_vars))
    return grads, metrics

  def _eg_apply(self, g_grads, e_grads):
    """Adds the orthogonal regulariser's gradient to G's; applies both."""
    s = self.state
    with tf.GradientTape() as tape:
      ortho, share = self._ortho()
    if self.config.optim.g_ortho_reg:
      g_grads = [_add(g, r) for g, r in zip(
          g_grads, _dense(tape.gradient(share, s.g_vars)))]
    s.g_opt.apply_gradients(zip(g_grads, s.g_vars))
    s.e_opt.apply_gradients(zip(e_grads, s.e_vars))
    return ortho

  def _forward(self, x_e, z, noise):
    s = self.state
    z_hat = s.nets.encoder(x_e, training=True, noise=noise)['z_sample']
    return z_hat, s.nets.generator(z, training=True)

  def _d_step_fn(self, batch):
    x_e, x, z, noise = self._inputs(batch)

    def grads_fn(x_e, x, z, noise):
      z_hat, x_fake = self._forward(x_e, z, noise)
      return self._d_grads(x, z_hat, x_fake, z)

    s = self.state
    grads, metrics = self._accumulate(
        self._micro_batches(x_e, x, z, noise), grads_fn)
    s.d_opt.apply_gradients(zip(grads, s.d_vars))
    return metrics

  def _eg_step_fn(self, batch):
    """One E/G update; its gradients summed over the micro-batches."""
    x_e, x, z, noise = self._inputs(batch)
    grads, metrics = self._accumulate(
        self._micro_batches(x_e, x, z, noise), self._eg_grads)
    n_g = len(self.state.g_vars)
    ortho = self._eg_apply(grads[:n_g], grads[n_g:])
    return {**metrics, 'g_ortho_reg': ortho}

  def _d_then_eg_step_fn(self, batch):
    """The last D step, then the E/G step on the same E(x) and G(z).

    E and G do not change during a D step, so the E/G step's forward passes
    of E and G would recompute exactly what the D step computed (same x, z,
    noise): they run once, under a tape kept for the E/G gradients, and D's
    update runs in between with recording paused. D's second pair of calls
    reads D's updated weights (tf.function orders reads after the update).
    Equal to a D step followed by an E/G step drawing the same z and noise;
    saves one forward pass of E and of G per iteration. Only used with
    `optim.grad_accum_steps` = 1 (see `Trainer.__init__`).
    """
    s = self.state
    x_e, x, z, noise = self._inputs(batch)
    with tf.GradientTape() as tape:
      z_hat, x_fake = self._forward(x_e, z, noise)
      with tape.stop_recording():
        d_metrics = self._d_update(x, z_hat, x_fake, z)
      loss, metrics = self._eg_losses(x, z_hat, x_fake, z)
    grads = _dense(tape.gradient(loss, s.g_vars + s.e_vars))
    n_g = len(s.g_vars)
    ortho = self._eg_apply(grads[:n_g], grads[n_g:])
    return {**d_metrics, **metrics, 'g_ortho_reg': ortho}

  def _reduce(self, per_replica):
    return {k: self.strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None)
            for k, v in per_replica.items()}

  def _iteration(self, iterator):
    """disc_iters D steps, one E/G step (on the last D batch), EMA update."""
    s = self.state
    d_iters = self.config.optim.disc_iters
    if self._fuse_d_and_eg:
      for _ in range(d_iters - 1):
        self._reduce(self.strategy.run(self._d_step, (next(iterator),)))
      metrics = self._reduce(
          self.strategy.run(self._d_then_eg_step, (next(iterator),)))
    else:
      for _ in range(d_iters):
        batch = next(iterator)
        d_metrics = self._reduce(self.strategy.run(self._d_step, (batch,)))
      eg_metrics = self._reduce(self.strategy.run(self._eg_step, (batch,)))
      metrics = {**d_metrics, **eg_metrics}
    s.step.assign_add(1)
    decay = _ema_decay(self.config, s.step)
    s.g_ema.update(decay)
    s.e_ema.update(decay)
    # ortho is not scaled by the global batch: undo the replica sum.
    metrics['g_ortho_reg'] /= self.strategy.num_replicas_in_sync
    return metrics

  def _stop_now(self):
    """Whether a stop was requested; under multi-worker, by any worker.

    Workers must leave the loop at the same step (a collective would wait
    forever for one that left), so there the flags are summed across them.
    """
    flag = tf.cast(self.stop_requested, tf.float32)
    if isinstance(self.strategy, tf.distribute.MultiWorkerMirroredStrategy):
      flag = self.strategy.reduce(
          tf.distribute.ReduceOp.SUM,
          self.strategy.run(lambda: tf.cast(self.stop_requested, tf.float32)),
          axis=None)
    return flag > 0

  def _train_loop(self, iterator, num_steps):
    """Runs up to `num_steps` iterations; stops early on `stop_requested`.

    Returns the metrics averaged over the iterations run, plus 'steps_run'
    (int32) and 'stopped' (bool: the loop ended on a stop request).
    """
    totals = {k: tf.constant(0.0) for k in metric_names()}
    done = tf.constant(0)
    stopped = self._stop_now()
    # The stop check sits in the loop's condition, not in a `break`: autograph
    # would put the rest of the body (the replicated step) inside a tf.cond,
    # which MirroredStrategy's replica context cannot be captured into.
    while done < num_steps and not stopped:
      metrics = self._iteration(iterator)
      totals = {k: totals[k] + metrics[k] for k in totals}
      done += 1
      self.steps_in_call.assign_add(1)
      stopped = self._stop_now()
    out = {k: v / tf.cast(tf.maximum(done, 1), tf.float32)
           for k, v in totals.items()}
    return {**out, 'steps_run': done, 'stopped': stopped}
