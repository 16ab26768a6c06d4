"""Benchmark of one training iteration: time, throughput, memory, utilisation.

  python -m bigbigan_tf.bench --preset=biggan32
  python -m bigbigan_tf.bench --config=bigbigan_tf/configs/mnist.py \
      --config.train.precision=mixed_bfloat16

Prints one JSON object. An iteration is `optim.disc_iters` D steps plus one
E/G step (and the EMA update), run by the same compiled loop train.py uses, fed
by the real input pipeline. Model FLOPs utilisation = analytic FLOPs of an
iteration (TF's graph profiler over the traced iteration) / its median time /
this machine's dense-matmul FLOP/s, measured in the same run at the same
precision.
"""

import json
import os
import resource
import statistics
import sys
import time

from absl import app
from absl import flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'Config file (instead of --preset).', lock_config=False)
_PRESET = flags.DEFINE_enum('preset', None, ['biggan32', 'biggan128', 'default'],
                            'Named benchmark setting.')
_PRECISION = flags.DEFINE_enum('precision', None, ['float32', 'mixed_bfloat16'],
                               'Override train.precision.')
_JIT = flags.DEFINE_bool('jit_compile', None, 'Override train.jit_compile.')
_REPEATS = flags.DEFINE_integer('repeats', 7, 'Timed loop calls.')
_STEPS = flags.DEFINE_integer('steps_per_call', 2,
                              'Iterations per compiled loop call.')
_WARMUP = flags.DEFINE_integer('warmup', 2, 'Untimed loop calls first.')


def preset_config(name: str):
  """The benchmark presets: biggan32 and biggan128 (disc_iters = 1), and the
  offline default config as it is."""
  from bigbigan_tf.configs import mnist  # pylint: disable=g-import-not-at-top
  config = mnist.get_config()
  with config.unlocked():
    if name in ('biggan32', 'biggan128'):
      # The speed targets compare 1 D step + 1 E/G step with BigGAN-PyTorch.
      config.optim.disc_iters = 1
    if name == 'biggan32':
      # BigGAN-PyTorch's 32px G and D (ch 32, batch 16), offline default's E.
      config.batch_size = 16
      config.model.generator.ch = 32
      config.model.discriminator.ch = 32
    elif name == 'biggan128':
      # 128px, ch 32, batch 8, attention at 64 (BigGAN-PyTorch's reference
      # run), with a ResNet-v2-50 E at width 1/4 on 256px input.
      config.batch_size = 8
      config.model.resolution = 128
      config.model.encoder_resolution = 256
      config.model.generator.ch = 32
      config.model.discriminator.ch = 32
      config.model.generator.attention_resolution = 64
      config.model.discriminator.attention_resolution = 64
      config.model.encoder.blocks_per_stage = (3, 4, 6, 3)
      config.model.encoder.width_multiplier = 0.25
    elif name != 'default':
      raise ValueError(f'Unknown preset {name!r}.')
  return config


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


def iteration_flops(trainer, iterator) -> float:
  """FLOPs of one iteration, from TF's profiler over its traced graph."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from tensorflow.python.profiler import model_analyzer  # pylint: disable=g-direct-tensorflow-import,g-import-not-at-top
  from tensorflow.python.profiler import option_builder  # pylint: disable=g-direct-tensorflow-import,g-import-not-at-top
  one = tf.function(trainer._iteration)  # pylint: disable=protected-access
  graph = one.get_concrete_function(iterator).graph
  opts = option_builder.ProfileOptionBuilder.float_operation()
  opts['output'] = 'none'
  # The D and E/G steps are nested functions; a graph's function library
  # already holds every function nested at any depth, so profile each once.
  graphs = {'': graph}
  pending = [graph]
  while pending:
    for name, f in getattr(pending.pop(), '_functions', {}).items():
      fn_graph = getattr(f, 'graph', None)
      if fn_graph is not None and name not in graphs:
        graphs[name] = fn_graph
        pending.append(fn_graph)
  return float(sum(model_analyzer.profile(g, options=opts).total_float_ops
                   for g in graphs.values()))


def run(config, *, repeats: int, steps_per_call: int, warmup: int) -> dict:
  """Measures `config`'s training iteration; returns the figures."""
  import keras  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from bigbigan_tf import config_lib  # pylint: disable=g-import-not-at-top
  from bigbigan_tf import data as data_lib  # pylint: disable=g-import-not-at-top
  from bigbigan_tf import train_lib  # pylint: disable=g-import-not-at-top

  config_lib.validate(config)
  keras.config.set_dtype_policy(config.train.precision)
  strategy = tf.distribute.get_strategy()
  state = train_lib.TrainState(config)
  trainer = train_lib.Trainer(state, strategy)
  ds = data_lib.make_dataset(config.data,
                             image_size=config.model.encoder_resolution,
                             batch_size=config.batch_size, training=True,
                             seed=config.seed)
  iterator = iter(ds)
  n = tf.constant(steps_per_call, tf.int32)
  start = time.perf_counter()
  for _ in range(max(warmup, 1)):
    trainer.train_loop(iterator, n)['d_loss'].numpy()
  warmup_s = time.perf_counter() - start
  per_call = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    trainer.train_loop(iterator, n)['d_loss'].numpy()
    per_call.append((time.perf_counter() - t0) / steps_per_call)
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

  flops = iteration_flops(trainer, iterator)
  dtype = (tf.bfloat16 if config.train.precision == 'mixed_bfloat16'
           else tf.float32)
  peak = matmul_flops_per_second(dtype)
  return {
      'iteration_s_median': round(iteration_s, 4),
      'iteration_s_all': [round(t, 4) for t in per_call],
      'images_per_second': round(config.batch_size / iteration_s, 2),
      'input_pipeline_images_per_second': round(pipeline_ips, 1),
      'input_pipeline_over_consumption': round(pipeline_ips / consumed_ips, 1),
      'peak_rss_mb': round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
                           / 1024, 1),
      'iteration_gflop': round(flops / 1e9, 2),
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
      'jit_compile': config.train.jit_compile,
      'threads': os.cpu_count(),
  }


def main(argv):
  del argv
  if (_PRESET.value is None) == (_CONFIG.value is None):
    print('error: pass exactly one of --preset=NAME or --config=FILE',
          file=sys.stderr)
    sys.exit(2)
  config = (preset_config(_PRESET.value) if _PRESET.value else _CONFIG.value)
  with config.unlocked():
    if _PRECISION.value:
      config.train.precision = _PRECISION.value
    if _JIT.value is not None:
      config.train.jit_compile = _JIT.value
  result = {'preset': _PRESET.value}
  result.update(run(config, repeats=_REPEATS.value,
                    steps_per_call=_STEPS.value, warmup=_WARMUP.value))
  print(json.dumps(result))


if __name__ == '__main__':
  app.run(main)
