"""Benchmark of one training iteration: time, throughput, memory, utilisation.

The library of `python -m bigbigan_tf.bench` (its flags live in
bigbigan_tf/bench/__main__.py):

  python -m bigbigan_tf.bench --preset=biggan32
  python -m bigbigan_tf.bench --config=bigbigan_tf/configs/mnist.py \
      --config.train.precision=mixed_bfloat16
  # A preset with overrides:
  python -m bigbigan_tf.bench \
      --config=bigbigan_tf/bench/presets.py:biggan32 \
      --config.model.fused_resampling=False
  # A/B in one process: the config and each variant, timed alternately:
  python -m bigbigan_tf.bench --preset=biggan32 --repeats=16 \
      --compare='model.fused_batch_norm=False' \
      --compare='model.fused_resampling=False;model.fused_batch_norm=False'

Prints one JSON object. An iteration is `optim.disc_iters` D steps plus one
E/G step (and the EMA update), run by the same compiled loop train.py uses, fed
by the real input pipeline. Model FLOPs utilisation = analytic FLOPs of an
iteration (forward FLOPs of E, G and D from their op shapes, times the usual
backward multipliers; see iteration_flops) / its median time /
this machine's dense-matmul FLOP/s, measured in the same run at the same
precision.

With --compare, the config and each variant (overrides `key=value;...`) are
built in one process and their loop calls alternate (the order reversed every
round), so the machine's drift hits all alike; it prints each one's median
time and the median of its per-round ratio to the config's. A shared, noisy
machine moves separate runs by +-10%, more than many changes buy.
"""

import ast
import copy
import os
import resource
import statistics
import time


def preset_config(name: str):
  """The benchmark presets (bench/presets.py): biggan32, biggan128
  (disc_iters = 1, float32) and the offline default config as it is."""
  from bigbigan_tf.bench import presets  # pylint: disable=g-import-not-at-top
  return presets.get_config(name)


def encoder_name(config) -> str:
  e = config.model.encoder
  depth = 2 + 3 * sum(e.blocks_per_stage)
  return (f'ResNet-v2-{depth} x{e.width_multiplier:g} on '
          f'{config.model.encoder_resolution}px')


def _median_time(fn, repeats):
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def matmul_flops_per_second(dtype, *, n: int = 2048, repeats: int = 7) -> float:
  """Dense matmul FLOP/s on this machine (median of `repeats`)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  a = tf.random.normal([n, n], dtype=tf.float32)
  a = tf.cast(a, dtype)
  matmul = tf.function(lambda: tf.reduce_sum(tf.cast(tf.matmul(a, a),
                                                     tf.float32)))
  matmul().numpy()
  t = _median_time(lambda: matmul().numpy(), repeats)
  return 2 * n ** 3 / t


def forward_flops(fn, *specs) -> float:
  """FLOPs of one forward call of `fn` on inputs of the given TensorSpecs.

  Counted by TF's graph profiler from the op shapes of the traced forward
  graph (Conv2D: 2 * output pixels * k * k * C_in * C_out, MatMul: 2 * M * K *
  N, ...): an analytic count, with no backward graph to over- or under-count.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from tensorflow.python.profiler import model_analyzer  # pylint: disable=g-direct-tensorflow-import,g-import-not-at-top
  from tensorflow.python.profiler import option_builder  # pylint: disable=g-direct-tensorflow-import,g-import-not-at-top
  graph = tf.function(fn, autograph=False).get_concrete_function(*specs).graph
  opts = option_builder.ProfileOptionBuilder.float_operation()
  opts['output'] = 'none'
  return float(model_analyzer.profile(graph, options=opts).total_float_ops)


def iteration_flops(config, nets) -> dict:
  """Analytic FLOPs of one training iteration, per network and in total.

  With f_E, f_G the forward FLOPs of E and G on a batch of B and f_D those of
  D on the 2B real and fake pairs, and the usual convention that a backward
  pass costs twice the forward (gradients with respect to inputs and to
  weights, one forward's worth each):
    D step   = f_E + f_G + f_D (forward) + 2 f_D (backward to D's weights)
    E/G step = f_E + f_G + f_D (forward) + f_D (backward through D to its
               inputs only) + 2 f_G + 2 f_E (backward to G's and E's weights)
  and an iteration is disc_iters D steps plus one E/G step. With
  `optim.eg_reuses_d_forward` the E/G step reuses the last D step's forward
  of E and G, so it costs f_E + f_G less. (The E/G step's backward skips F
  on the real half, so it needs fewer FLOPs than counted; the convention is
  kept so MFU compares across versions.)
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  m, b = config.model, config.batch_size
  z = tf.TensorSpec([b, m.z_dim], tf.float32)
  x_e = tf.TensorSpec([b, m.encoder_resolution, m.encoder_resolution, 3],
                      tf.float32)
  x_2b = tf.TensorSpec([2 * b, m.resolution, m.resolution, 3], tf.float32)
  z_2b = tf.TensorSpec([2 * b, m.z_dim], tf.float32)
  f_e = forward_flops(
      lambda x, n: nets.encoder(x, training=True, noise=n)['z_sample'], x_e, z)
  f_g = forward_flops(lambda z: nets.generator(z, training=True), z)
  f_d = forward_flops(
      lambda x, z: nets.discriminator(x, z, training=True)['score_xz'],
      x_2b, z_2b)
  d_step = f_e + f_g + 3 * f_d
  eg_step = 3 * f_e + 3 * f_g + 2 * f_d
  if config.optim.eg_reuses_d_forward:
    eg_step -= f_e + f_g
  total = config.optim.disc_iters * d_step + eg_step
  return {'encoder_forward': f_e, 'generator_forward': f_g,
          'discriminator_forward_2b': f_d, 'iteration': total}


def _build_trainer(config):
  """(hardware.Resolution, TrainState, Trainer, dataset) for `config`, as
  train.py makes them ('auto' fields settled for this machine)."""
  import keras  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from bigbigan_tf import config_lib  # pylint: disable=g-import-not-at-top
  from bigbigan_tf import data as data_lib  # pylint: disable=g-import-not-at-top
  from bigbigan_tf import checkpoints  # pylint: disable=g-import-not-at-top
  from bigbigan_tf import trainer as trainer_lib  # pylint: disable=g-import-not-at-top
  from bigbigan_tf import hardware  # pylint: disable=g-import-not-at-top

  config_lib.validate(config)
  resolution = hardware.resolve(config)
  config = resolution.config
  # The dtype policy is read when layers are made.
  keras.config.set_dtype_policy(config.train.precision)
  state = checkpoints.TrainState(config)
  trainer = trainer_lib.Trainer(state, tf.distribute.get_strategy())
  ds = data_lib.make_dataset(config.data,
                             image_size=config.model.encoder_resolution,
                             batch_size=config.batch_size, training=True,
                             seed=config.seed)
  return resolution, state, trainer, ds


def _loop_call_s(trainer, iterator, n) -> float:
  """Wall time of one compiled loop call of n iterations, to the result."""
  t0 = time.perf_counter()
  trainer.train_loop(iterator, n)['d_loss'].numpy()
  return time.perf_counter() - t0


def with_overrides(config, overrides: str):
  """A copy of `config` with 'key=value;key=value' applied (typed like the
  field they replace).

  Raises:
    ValueError: naming the key or value that does not fit.
  """
  config = copy.deepcopy(config)
  for item in filter(None, (i.strip() for i in overrides.split(';'))):
    key, eq, text = item.partition('=')
    if not eq:
      raise ValueError(f'--compare item {item!r} is not key=value.')
    *parents, leaf = key.strip().split('.')
    node = config
    try:
      for name in parents:
        node = node[name]
      old = node[leaf]
    except (KeyError, AttributeError, TypeError):
      raise ValueError(f'--compare: {key!r} is not a config field.') from None
    text = text.strip()
    try:
      if isinstance(old, bool):
        if text.lower() not in ('true', 'false'):
          raise ValueError(text)
        value = text.lower() == 'true'
      elif isinstance(old, (int, float)):
        value = type(old)(ast.literal_eval(text))
      elif isinstance(old, str):
        value = text
      else:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
      raise ValueError(f'--compare: {text!r} is not a valid value for {key} '
                       f'(now {old!r}).') from None
    with config.unlocked():
      node[leaf] = value
  return config


def compare(config, variants, *, rounds: int, steps_per_call: int,
            warmup: int) -> dict:
  """Times `config` and each variant's iteration alternately, in one process.

  Args:
    config: the base config.
    variants: [(overrides text, its config from `with_overrides`)].
    rounds: timed loop calls of each; round r runs them in order, reversed
      when r is odd.

  Returns:
    {'compare': [{'overrides', 'iteration_s_median', 'iteration_s_all',
    'ratio_to_base_median'}, ...]} with the base config first.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  runs, resolutions = [], []
  for name, cfg in [('(config)', config)] + list(variants):
    resolution, _, trainer, ds = _build_trainer(cfg)
    resolutions.append(resolution)
    runs.append((name, trainer, iter(ds)))
  n = tf.constant(steps_per_call, tf.int32)
  for _, trainer, iterator in runs:
    for _ in range(max(warmup, 1)):
      _loop_call_s(trainer, iterator, n)
  times = [[] for _ in runs]
  for r in range(rounds):
    order = list(range(len(runs)))
    for i in (order if r % 2 == 0 else order[::-1]):
      _, trainer, iterator = runs[i]
      times[i].append(_loop_call_s(trainer, iterator, n) / steps_per_call)
  rows = []
  for (name, _, _), ts in zip(runs, times):
    rows.append({
        'overrides': name,
        'iteration_s_median': round(statistics.median(ts), 4),
        'iteration_s_all': [round(t, 4) for t in ts],
        'ratio_to_base_median': round(statistics.median(
            [a / b for a, b in zip(ts, times[0])]), 3),
    })
  return {'compare': rows, 'rounds': rounds,
          'precision': resolutions[0].config.train.precision,
          'device': resolutions[0].device.describe(),
          'encoder': encoder_name(config)}


def run(config, *, repeats: int, steps_per_call: int, warmup: int,
        matmul_size: int = 2048) -> dict:
  """Measures `config`'s training iteration; returns the figures."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  from bigbigan_tf import hardware  # pylint: disable=g-import-not-at-top
  resolution, state, trainer, ds = _build_trainer(config)
  config = resolution.config
  iterator = iter(ds)
  n = tf.constant(steps_per_call, tf.int32)
  warmup_s = sum(_loop_call_s(trainer, iterator, n)
                 for _ in range(max(warmup, 1)))
  per_call = [_loop_call_s(trainer, iterator, n) / steps_per_call
              for _ in range(repeats)]
  iteration_s = statistics.median(per_call)

  # The input pipeline alone: batches per second after a warm-up.
  data_iter = iter(ds)
  for _ in range(5):
    next(data_iter)
  batches = max(20, int(3 / max(iteration_s, 1e-3)))
  t0 = time.perf_counter()
  for _ in range(batches):
    next(data_iter)['image'].numpy()
  pipeline_ips = batches * config.batch_size / (time.perf_counter() - t0)
  # Images consumed per iteration: one batch per D step.
  consumed_ips = config.optim.disc_iters * config.batch_size / iteration_s

  flops_by_part = iteration_flops(config, state.nets)
  flops = flops_by_part['iteration']
  dtype = (tf.bfloat16 if config.train.precision == 'mixed_bfloat16'
           else tf.float32)
  peak = matmul_flops_per_second(dtype, n=matmul_size)
  return {
      'iteration_s_median': round(iteration_s, 4),
      'iteration_s_all': [round(t, 4) for t in per_call],
      'images_per_second': round(config.batch_size / iteration_s, 2),
      'input_pipeline_images_per_second': round(pipeline_ips, 1),
      'input_pipeline_over_consumption': round(pipeline_ips / consumed_ips, 1),
      'peak_rss_mb': round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
                           / 1024, 1),
      'iteration_gflop': round(flops / 1e9, 2),
      'forward_gflop': {k: round(v / 1e9, 3) for k, v in
                        flops_by_part.items() if k != 'iteration'},
      'matmul_gflop_per_s': round(peak / 1e9, 1),
      'mfu': round(flops / iteration_s / peak, 4),
      'warmup_s': round(warmup_s, 1),
      'batch_size': config.batch_size,
      'resolution': config.model.resolution,
      'g_ch': config.model.generator.ch,
      'd_ch': config.model.discriminator.ch,
      'encoder': encoder_name(config),
      'disc_iters': config.optim.disc_iters,
      'precision': config.train.precision,
      'device': resolution.device.describe(),
      'cpu_model': resolution.device.name if resolution.device.kind == 'cpu'
                   else None,
      'cpu_isa': hardware.isa_features(resolution.device.cpu_flags),
      'resolved': {k: {'requested': hardware.requested_value(resolution, k),
                       'value': v, 'why': why}
                   for k, (v, why) in resolution.choices.items()},
      'jit_compile': config.train.jit_compile,
      'threads': os.cpu_count(),
  }
