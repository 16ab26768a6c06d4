r"""Plots a run's evaluation curves: python eval/plot_curves.py --workdir=W --out=P.png

Reads W/eval/results_step{N}.json (written by eval/evaluate.py, its --watch
sidecar, or config.eval inside training) and draws one panel per metric
against the training step, marking the kept best step (W/best/best.json).
Matplotlib ships with the requirements (mlxtend depends on it).
"""

import json
import os
import re
import sys

from absl import app
from absl import flags

_WORKDIR = flags.DEFINE_string('workdir', None, 'The run\'s workdir.')
_OUT = flags.DEFINE_string('out', None, 'PNG to write (default '
                           'WORKDIR/eval/curves.png).')
_METRICS = flags.DEFINE_string(
    'metrics', 'linear_probe/top1,digit_fid,recon_accuracy',
    'Comma-separated result keys to plot.')

# Shown as errors (1 - accuracy), as the README's results table does.
_AS_ERROR = {'linear_probe/top1': 'linear-probe top-1 error'}


def read_results(workdir: str) -> dict:
  """{step: metrics} from W/eval/results_step*.json."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  out = {}
  pattern = re.compile(r'results_step(\d+)\.json$')
  for path in tf.io.gfile.glob(os.path.join(workdir, 'eval',
                                            'results_step*.json')):
    match = pattern.search(path)
    if match:
      with tf.io.gfile.GFile(path) as f:
        out[int(match.group(1))] = json.load(f).get('metrics', {})
  return dict(sorted(out.items()))


def main(argv):
  del argv
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  results = read_results(_WORKDIR.value)
  if not results:
    print(f'error: no {_WORKDIR.value}/eval/results_step*.json to plot; run '
          'eval/evaluate.py (or --watch) first.', file=sys.stderr)
    sys.exit(2)
  best = None
  best_path = os.path.join(_WORKDIR.value, 'best', 'best.json')
  if os.path.exists(best_path):
    with open(best_path) as f:
      best = json.load(f)
  keys = [k for k in _METRICS.value.split(',') if k]
  fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3.2))
  for ax, key in zip(axes if len(keys) > 1 else [axes], keys):
    steps = [s for s, m in results.items() if key in m]
    values = [results[s][key] for s in steps]
    label = key
    if key in _AS_ERROR:
      values, label = [100 * (1 - v) for v in values], _AS_ERROR[key] + ' (%)'
    elif key == 'recon_accuracy':
      values, label = [100 * v for v in values], 'reconstructions kept (%)'
    ax.plot(steps, values, 'o-')
    if best:
      ax.axvline(best['step'], color='grey', linestyle=':',
                 label=f'best ({best["metric"]}) step {best["step"]}')
      ax.legend(fontsize=8)
    ax.set_xlabel('training step')
    ax.set_title(label, fontsize=10)
    ax.grid(alpha=0.3)
  fig.tight_layout()
  out = _OUT.value or os.path.join(_WORKDIR.value, 'eval', 'curves.png')
  fig.savefig(out, dpi=90)
  print(out)


if __name__ == '__main__':
  flags.mark_flags_as_required(['workdir'])
  app.run(main)
