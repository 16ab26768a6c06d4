r"""A quick linear probe along a run: python eval/quick_probe.py --workdir=W.

  python eval/quick_probe.py --workdir=W [--steps=0,1000,5000]

For each checkpoint (default: every one kept in W/checkpoints), encodes the
data's train and eval splits with the EMA encoder and prints the top-1 error
of an L2-regularised logistic regression (scikit-learn, C=1, on features
standardised with the train split's statistics) for every frozen feature
(avepool_feat, bn_crelu_feat, z_mean), as one JSON line per checkpoint.

It takes about a minute per checkpoint on the offline default, where the
paper's protocol (`eval/evaluate.py --metrics=linear_probe`: Adam over a
learning-rate grid, selected on a train_val split) takes several; use it to
follow a run or compare settings, and evaluate.py for the reported figure.
The two differ (this one fits on the whole train split, with weight decay).
"""

import json
import os
import sys

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _REPO not in sys.path:
  sys.path.insert(0, _REPO)

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags  # pylint: disable=g-import-not-at-top

_WORKDIR = flags.DEFINE_string('workdir', None, 'Training run directory.')
_STEPS = flags.DEFINE_list(
    'steps', None, 'Checkpoint steps to probe (default: all kept).')
_TRAIN_SPLIT = flags.DEFINE_string(
    'train_split', None, 'Split to fit on (default: the config data.split).')
_EVAL_SPLIT = flags.DEFINE_string(
    'eval_split', None, 'Split to score (default: config data.eval_split).')


def _encode_split(config, nets, split):
  import numpy as np  # pylint: disable=g-import-not-at-top
  from eval import features as features_lib  # pylint: disable=g-import-not-at-top
  feats, labels = {k: [] for k in features_lib.FEATURES}, []
  for batch in features_lib.real_batches(
      config, split=split, image_size=config.model.encoder_resolution,
      batch_size=200):
    if 'label' not in batch:
      raise ValueError(f'Split {split!r} of {config.data.name!r} has no '
                       'labels; a probe needs labelled data.')
    out = nets.encode(batch['image'].numpy())
    for k in feats:
      feats[k].append(np.asarray(out[k]).reshape(len(out[k]), -1))
    labels.append(batch['label'].numpy())
  return ({k: np.concatenate(v) for k, v in feats.items()},
          np.concatenate(labels))


def main(argv):
  del argv
  if not _WORKDIR.value:
    print('error: pass --workdir=W (the directory train.py wrote to)',
          file=sys.stderr)
    sys.exit(2)
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from eval import features as features_lib  # pylint: disable=g-import-not-at-top
  from eval import linear_probe  # pylint: disable=g-import-not-at-top
  ckpt_dir = os.path.join(_WORKDIR.value, 'checkpoints')
  if _STEPS.value:
    paths = [os.path.join(ckpt_dir, f'ckpt-{int(s)}') for s in _STEPS.value]
  else:
    state = tf.train.get_checkpoint_state(ckpt_dir)
    paths = list(state.all_model_checkpoint_paths) if state else []
    if not paths:
      print(f'error: no checkpoints in {ckpt_dir}; pass the --workdir '
            'that train.py wrote to', file=sys.stderr)
      sys.exit(2)
  for path in paths:
    try:
      config, nets = features_lib.load_from_workdir(_WORKDIR.value,
                                                    checkpoint=path)
    except (FileNotFoundError, ValueError) as e:
      print(f'error: {e}', file=sys.stderr)
      sys.exit(2)
    train_split = _TRAIN_SPLIT.value or config.data.split
    eval_split = _EVAL_SPLIT.value or config.data.eval_split
    encoded = {s: _encode_split(config, nets, s)
               for s in (train_split, eval_split)}
    errors = linear_probe.quick_probe_errors(
        encoded[train_split][0], encoded[train_split][1],
        encoded[eval_split][0], encoded[eval_split][1])
    print(json.dumps({'step': nets.step, 'checkpoint': path,
                      'num_train': int(len(encoded[train_split][1])),
                      'num_eval': int(len(encoded[eval_split][1])),
                      'top1_error': {k: round(v, 4) for k, v in
                                     errors.items()}}), flush=True)


if __name__ == '__main__':
  app.run(main)
