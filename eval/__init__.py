"""Command-line entry points: evaluate.py and quick_probe.py.

The evaluation library they call is the package `bigbigan_tf.evaluation`.
"""
