"""The training-iteration benchmark: `python -m bigbigan_tf.bench`.

bench_lib.py  what is measured (time, FLOPs, MFU, memory) and the A/B runs
presets.py    the --preset configs (biggan32, biggan128, default)
__main__.py   the command line (absl flags)
"""
