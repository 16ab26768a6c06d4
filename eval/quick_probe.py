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

from absl import app
from absl import flags

from bigbigan_tf import defaults

_WORKDIR = flags.DEFINE_string('workdir', None, 'Training run directory.')
_STEPS = flags.DEFINE_list(
    'steps', None, 'Checkpoint steps to probe (default: all kept).')
_TRAIN_SPLIT = flags.DEFINE_string(
    'train_split', None, 'Split to fit on (default: the config data.split).')
_EVAL_SPLIT = flags.DEFINE_string(
    'eval_split', None, 'Split to score (default: config data.eval_split).')
_STANDING_STATS_BATCHES = flags.DEFINE_integer(
    'standing_stats_batches', defaults.STANDING_STATS_BATCHES,
    'Batches of BigGAN standing statistics for '
    'the EMA encoder\'s batch norms (as export.py and evaluate.py); 0 keeps '
    'the live networks\' moving statistics.', lower_bound=0)


def _labelled_split(config, split):
  """One pass over a split: its labelled images [N, S, S, 3] and labels [N].

  Read once, encoded again for every checkpoint.
  """
  import numpy as np  # pylint: disable=g-import-not-at-top
  from bigbigan_tf.evaluation import evaluate_lib  # pylint: disable=g-import-not-at-top
  from bigbigan_tf.evaluation import features as features_lib  # pylint: disable=g-import-not-at-top
  images, labels = [], []
  for batch in features_lib.real_batches(
      config, split=split, image_size=config.model.encoder_resolution,
      batch_size=200):
    images.append(batch['image'].numpy())
    labels.append(batch['label'].numpy())
  images, labels = np.concatenate(images), np.concatenate(labels)
  keep = evaluate_lib.probe_labels(labels, split)
  return images[keep], labels[keep]


def _encode(nets, images, batch_size=200):
  """{feature: [N, D]} of the encoder for `images`, in batches."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  outs = [nets.encode(images[i:i + batch_size])
          for i in range(0, len(images), batch_size)]
  return {k: np.concatenate([np.asarray(o[k]).reshape(len(o[k]), -1)
                             for o in outs]) for k in defaults.FEATURES}


def main(argv):
  del argv
  if not _WORKDIR.value:
    print('error: pass --workdir=W (the directory train.py wrote to)',
          file=sys.stderr)
    sys.exit(2)
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from bigbigan_tf import checkpoints  # pylint: disable=g-import-not-at-top
  from bigbigan_tf.evaluation import evaluate_lib  # pylint: disable=g-import-not-at-top
  from bigbigan_tf.evaluation import features as features_lib  # pylint: disable=g-import-not-at-top
  from bigbigan_tf.evaluation import linear_probe  # pylint: disable=g-import-not-at-top
  ckpt_dir = os.path.join(_WORKDIR.value, defaults.CHECKPOINT_DIR)
  if _STEPS.value and not all(s.isdigit() for s in _STEPS.value):
    print(f'error: --steps takes checkpoint steps like 0,1000,5000; got '
          f'{",".join(_STEPS.value)!r}', file=sys.stderr)
    sys.exit(2)
  if _STEPS.value:
    paths = [os.path.join(ckpt_dir, f'ckpt-{int(s)}') for s in _STEPS.value]
  else:
    state = tf.train.get_checkpoint_state(ckpt_dir)
    paths = list(state.all_model_checkpoint_paths) if state else []
    if not paths:
      print(f'error: no checkpoints in {ckpt_dir}; pass the --workdir '
            'that train.py wrote to', file=sys.stderr)
      sys.exit(2)
  try:
    config = checkpoints.load_config(_WORKDIR.value)
    train_split = _TRAIN_SPLIT.value or config.data.split
    eval_split = _EVAL_SPLIT.value or config.data.eval_split
    data = {s: _labelled_split(config, s) for s in (train_split, eval_split)}
  except (FileNotFoundError, checkpoints.WorkdirError,
          evaluate_lib.MetricUnavailableError) as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)
  unreadable = []
  (train_x, train_y), (eval_x, eval_y) = data[train_split], data[eval_split]
  for path in paths:
    try:
      _, nets = features_lib.load_from_workdir(
          _WORKDIR.value, checkpoint=path,
          standing_stats_batches=_STANDING_STATS_BATCHES.value)
    except (FileNotFoundError, ValueError) as e:
      print(f'error: {e}', file=sys.stderr)
      sys.exit(2)
    except checkpoints.UnreadableCheckpointError as e:
      # The others are still probed; the exit status says one was skipped.
      print(f'error: {e}', file=sys.stderr)
      unreadable.append(path)
      continue
    errors = linear_probe.quick_probe_errors(
        _encode(nets, train_x), train_y, _encode(nets, eval_x), eval_y)
    print(json.dumps({'step': nets.step, 'checkpoint': path,
                      'num_train': int(len(train_y)),
                      'num_eval': int(len(eval_y)),
                      'top1_error': {k: round(v, 4) for k, v in
                                     errors.items()}}), flush=True)
  if unreadable:
    sys.exit(2)


if __name__ == '__main__':
  app.run(main)
