"""Benchmarks: commands that print figures (speed and memory are checked here,
not in timed tests).

python -m bigbigan_tf.bench                 the training-iteration benchmark
  __main__.py     its command line (absl flags)
  bench_lib.py    what it measures (time, FLOPs, MFU, memory) and the A/B runs
  presets.py      the --preset configs (biggan32, biggan128, default)
python -m bigbigan_tf.bench.paper_scale     the paper config at full width:
                                            one iteration, checkpoint, export, load
python -m bigbigan_tf.bench.revnet_memory   peak memory of a RevNet E/G step with
                                            and without the reversible gradient
"""
