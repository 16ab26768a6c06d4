r"""Plots a run's evaluation curves: python eval/plot_curves.py --workdir=W --out=P.png

Reads W/eval/results_step{N}_{FP}.json of one settings FP (written by
eval/evaluate.py, its --watch sidecar, or config.eval inside training) and
draws one panel per metric against the training step, marking the kept best
step (W/best/best.json).
It also prints the curves as a Markdown table (one row per step).
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

_LOG_SCALE = ('fid', 'kid', 'digit_fid')
# Shown as errors (1 - accuracy), as the README's results table does.
_AS_ERROR = {'linear_probe/top1': 'linear-probe top-1 error'}


def read_results(workdir: str) -> dict:
  """{step: metrics} from W/eval/results_step{N}_{FP}.json.

  Results with other settings (another fingerprint FP) are other curves:
  the settings of the kept best are drawn, else those with the most steps
  (FP '' = the un-keyed files of older evaluators).
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  groups = {}
  pattern = re.compile(r'results_step(\d+)(?:_([0-9a-f]+))?\.json$')
  for path in tf.io.gfile.glob(os.path.join(workdir, 'eval',
                                            'results_step*.json')):
    match = pattern.search(path)
    if match:
      with tf.io.gfile.GFile(path) as f:
        groups.setdefault(match.group(2) or '', {})[int(match.group(1))] = (
            json.load(f).get('metrics', {}))
  if not groups:
    return {}
  best_path = os.path.join(workdir, 'best', 'best.json')
  kept = None  # no best kept: the settings with the most steps
  if tf.io.gfile.exists(best_path):
    with tf.io.gfile.GFile(best_path) as f:
      kept = json.load(f).get('fingerprint') or ''
  chosen = kept if kept in groups else max(groups, key=lambda g: len(groups[g]))
  if len(groups) > 1:
    print(f'Drawing the results of settings {chosen or "unknown"} '
          f'({len(groups) - 1} other setting(s) in {workdir}/eval).',
          file=sys.stderr)
  return dict(sorted(groups[chosen].items()))


def _shown(key: str, value: float) -> str:
  if key in _AS_ERROR or key == 'recon_accuracy':
    shown = 1 - value if key in _AS_ERROR else value
    return f'{100 * shown:.1f}%'
  return f'{value:.1f}'


def markdown_table(results: dict, keys: list, best: dict = None) -> str:
  """One row per evaluated step; the kept best step in bold."""
  names = [_AS_ERROR.get(k, 'reconstructions kept' if k == 'recon_accuracy'
                         else k) for k in keys]
  names = ['digit FD' if n == 'digit_fid' else n for n in names]
  lines = ['| step | ' + ' | '.join(names) + ' |',
           '|---' * (len(keys) + 1) + '|']
  for step, metrics in results.items():
    cells = [_shown(k, metrics[k]) if k in metrics else '-' for k in keys]
    label = str(step)
    if best and best.get('step') == step:
      label = f'**{step}** (best by {best["metric"]})'
    lines.append(f'| {label} | ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines)


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
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  best = None
  best_path = os.path.join(_WORKDIR.value, 'best', 'best.json')
  if tf.io.gfile.exists(best_path):
    with tf.io.gfile.GFile(best_path) as f:
      best = json.load(f)
  keys = [k for k in _METRICS.value.split(',') if k]
  print(markdown_table(results, keys, best))
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
    if key in _LOG_SCALE:
      # Step 0's distance is tens of times the rest: log scale shows both.
      ax.set_yscale('log')
      label += ' (log scale)'
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
