"""`python -m bigbigan_tf.bench`: the benchmark's command line.

See bigbigan_tf/bench/bench_lib.py for what it measures and prints, and
bigbigan_tf/bench/presets.py for the presets.
"""

import json
import sys

from absl import app
from absl import flags
from ml_collections import config_flags

from bigbigan_tf.bench import bench_lib

_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'Config file (instead of --preset).', lock_config=False)
_PRESET = flags.DEFINE_enum('preset', None, ['biggan32', 'biggan128', 'default'],
                            'Named benchmark setting.')
_PRECISION = flags.DEFINE_enum('precision', None, ['auto', 'float32', 'mixed_bfloat16'],
                               'Override train.precision.')
_JIT = flags.DEFINE_bool('jit_compile', None, 'Override train.jit_compile.')
_REPEATS = flags.DEFINE_integer('repeats', 7, 'Timed loop calls.')
_STEPS = flags.DEFINE_integer('steps_per_call', 2,
                              'Iterations per compiled loop call.')
_WARMUP = flags.DEFINE_integer('warmup', 2, 'Untimed loop calls first.')
_COMPARE = flags.DEFINE_multi_string(
    'compare', [], "A variant to time against the config in the same "
    "process: overrides 'key=value;key=value' (e.g. "
    "'model.fused_batch_norm=False'). Repeatable. Prints a comparison "
    'instead of the usual figures.')
_MATMUL_SIZE = flags.DEFINE_integer(
    'matmul_size', 2048, 'Side of the square matmul that measures this '
    "machine's dense FLOP/s (the MFU denominator).")

def main(argv):
  del argv
  if (_PRESET.value is None) == (_CONFIG.value is None):
    print('error: pass exactly one of --preset=NAME or --config=FILE',
          file=sys.stderr)
    sys.exit(2)
  config = (bench_lib.preset_config(_PRESET.value) if _PRESET.value
            else _CONFIG.value)
  with config.unlocked():
    if _PRECISION.value:
      config.train.precision = _PRECISION.value
    if _JIT.value is not None:
      config.train.jit_compile = _JIT.value
  result = {'preset': _PRESET.value}
  if _COMPARE.value:
    try:
      variants = [(v, bench_lib.with_overrides(config, v)) for v in _COMPARE.value]
    except ValueError as e:
      print(f'error: {e}', file=sys.stderr)
      sys.exit(2)
    result.update(bench_lib.compare(config, variants, rounds=_REPEATS.value,
                          steps_per_call=_STEPS.value, warmup=_WARMUP.value))
    print(json.dumps(result))
    return
  result.update(bench_lib.run(config, repeats=_REPEATS.value,
                    steps_per_call=_STEPS.value, warmup=_WARMUP.value,
                    matmul_size=_MATMUL_SIZE.value))
  print(json.dumps(result))


if __name__ == '__main__':
  app.run(main)
