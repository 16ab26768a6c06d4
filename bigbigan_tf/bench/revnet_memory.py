"""Peak memory of a RevNet E/G step with and without the reversible gradient.

    python -m bigbigan_tf.bench.revnet_memory [--blocks=4,8,16,32] [--batch=B]
        [--res=R] [--width=W] [--repeats=N]

For each depth (reversible blocks in stage 1, the full-resolution stage;
stages 2-4 keep one block each) and each variant, a fresh subprocess builds
G, D and a RevNet E, traces one compiled E/G gradient step (the encoder and
generator terms of the BiGAN loss against D's scores), runs it once to warm
up, then runs it again and reads the peak of TensorFlow's CPU allocator
(`tf.config.experimental.get_memory_info`, after `reset_memory_stats`): the
bytes of live tensors at the step's worst moment, which is what activations
cost. `step_mib` is that peak minus what was live before the step (weights,
inputs); `peak_rss_mib` (ru_maxrss, the process' resident peak, malloc
caches, code and all) is printed beside it but hides a few MiB of
activations under a GiB of runtime. Prints one JSON line per run and a
summary with each variant's growth per block (least squares over the
depths). Figures: docs/performance.md, "RevNet".
"""

import argparse
import json
import resource
import subprocess
import sys

_MIB = 1024 * 1024


def _variant(reversible: bool, blocks: int, batch: int, res: int,
             width: float) -> dict:
  # pylint: disable=g-import-not-at-top
  import numpy as np
  import tensorflow as tf
  from bigbigan_tf.configs import tiny
  from bigbigan_tf.models import build_networks
  config = tiny.get_config().model
  config.encoder.kind = 'revnet'
  config.encoder.blocks_per_stage = (blocks, 1, 1, 1)
  config.encoder.width_multiplier = width
  config.encoder_resolution = res
  nets = build_networks(config)
  nets.encoder.reversible_grad = reversible
  weights = nets.encoder.trainable_weights + nets.generator.trainable_weights
  rng = np.random.default_rng(0)
  x = tf.constant(rng.uniform(-1, 1, (batch, res, res, 3)).astype(np.float32))
  z = tf.constant(rng.standard_normal((batch, config.z_dim)).astype(
      np.float32))
  x_d = tf.image.resize(x, (config.resolution, config.resolution))

  @tf.function
  def step():
    with tf.GradientTape() as tape:
      enc = nets.encoder(x, training=True, noise=z)
      fake = nets.generator(z, training=True)
      s_enc = nets.discriminator(x_d, enc['z_sample'], training=True)
      s_gen = nets.discriminator(fake, z, training=True)
      loss = sum(tf.reduce_mean(v) for v in s_enc.values()) - sum(
          tf.reduce_mean(v) for v in s_gen.values())
    grads = tape.gradient(loss, weights)
    # One scalar out: the gradients are consumed inside the step.
    return tf.add_n([tf.reduce_sum(g) for g in grads if g is not None])

  step()  # trace, warm up
  tf.config.experimental.reset_memory_stats('CPU:0')
  before = tf.config.experimental.get_memory_info('CPU:0')['current']
  step().numpy()
  peak = tf.config.experimental.get_memory_info('CPU:0')['peak']
  rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
  return {'reversible_grad': reversible, 'blocks_stage1': blocks,
          'step_mib': round((peak - before) / _MIB, 2),
          'allocator_peak_mib': round(peak / _MIB, 2),
          'peak_rss_mib': round(rss / 1024, 1)}


def _slope(xs, ys) -> float:
  mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
  den = sum((a - mx) ** 2 for a in xs)
  return sum((a - mx) * (b - my) for a, b in zip(xs, ys)) / den if den else 0.


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument('--blocks', default='4,8,16,32',
                      help='comma-separated depths of stage 1 (reversible '
                           'blocks at full resolution)')
  parser.add_argument('--batch', type=int, default=16)
  parser.add_argument('--res', type=int, default=128,
                      help="E's input resolution (stage 1 runs at res / 4)")
  parser.add_argument('--width', type=float, default=0.25,
                      help='encoder width multiplier')
  parser.add_argument('--repeats', type=int, default=1,
                      help='fresh processes per depth and variant')
  parser.add_argument('--variant', choices=('on', 'off'), default=None,
                      help='internal: run one variant in this process')
  args = parser.parse_args()
  try:
    depths = [int(b) for b in args.blocks.split(',')]
  except ValueError:
    parser.error(f'--blocks must be comma-separated integers, got '
                 f'{args.blocks!r}')
  if any(b < 1 for b in depths):
    parser.error(f'--blocks must all be >= 1, got {args.blocks!r}')
  if args.variant:
    if len(depths) != 1:
      parser.error('--variant runs one depth')
    print(json.dumps(_variant(args.variant == 'on', depths[0], args.batch,
                              args.res, args.width)))
    return
  runs = []
  for blocks in depths:
    for _ in range(args.repeats):
      for variant in ('off', 'on'):
        out = subprocess.run(
            [sys.executable, '-m', 'bigbigan_tf.bench.revnet_memory',
             f'--variant={variant}', f'--blocks={blocks}',
             f'--batch={args.batch}', f'--res={args.res}',
             f'--width={args.width}'],
            capture_output=True, text=True, check=False)
        if out.returncode:
          sys.exit(f'variant {variant} at {blocks} blocks failed:\n'
                   f'{out.stderr[-3000:]}')
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(json.dumps(runs[-1]), flush=True)
  summary = {'batch': args.batch, 'encoder_resolution': args.res,
             'width_multiplier': args.width, 'measure': 'TF CPU allocator '
             'peak during one compiled E/G step, minus live before it'}
  for name, rev in (('plain', False), ('reversible', True)):
    mine = [r for r in runs if r['reversible_grad'] == rev]
    per_depth = {}
    for r in mine:
      per_depth.setdefault(r['blocks_stage1'], []).append(r['step_mib'])
    summary[name] = {'step_mib_by_blocks': {
        b: min(v) for b, v in sorted(per_depth.items())},
                     'mib_per_block': round(_slope(
                         [r['blocks_stage1'] for r in mine],
                         [r['step_mib'] for r in mine]), 3)}
  print(json.dumps(summary))


if __name__ == '__main__':
  main()
