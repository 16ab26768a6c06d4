"""Where a workdir keeps its kept-best checkpoint: W/best/ and its pointer.

The layout belongs to no single writer: the evaluator writes W/best/
(bigbigan_tf/evaluation/best.py), export.py and eval/evaluate.py read it
(`--checkpoint=best`, through `checkpoints.resolve_checkpoint`). It lives
here, below both, so no module imports upwards to find it.

  W/best/best.json       the pointer: step, metric, value, the step's other
                         metrics and 'checkpoint', the kept copy's prefix
                         relative to W/best (e.g. 'ckpt-800/ckpt-800').
  W/best/ckpt-STEP/      an immutable copy of that checkpoint's files.

Readers go through the pointer only. The layout before the pointer named a
directory ('legacy': best.json with 'prefix': 'ckpt-STEP' and the files
directly in W/best/) is still read; the watcher migrates it when it starts.
"""

import json
import os
from typing import Any, Dict, Optional

import tensorflow as tf

BEST_DIR = 'best'
BEST_JSON = 'best.json'
# The legacy writer's siblings of W/best (W/best.tmp-STEP, W/best.old).
LEGACY_TEMP_PREFIX = BEST_DIR + '.tmp-'
LEGACY_OLD = BEST_DIR + '.old'


def best_dir(workdir: str) -> str:
  return os.path.join(workdir, BEST_DIR)


def pointer_path(workdir: str) -> str:
  return os.path.join(workdir, BEST_DIR, BEST_JSON)


def read_best(workdir: str) -> Optional[Dict[str, Any]]:
  """W/best/best.json as a dict, or None if no best checkpoint is kept.

  The dict always has 'checkpoint' (the prefix relative to W/best), also
  for the legacy layout, and 'legacy': True there.
  """
  path = pointer_path(workdir)
  if not tf.io.gfile.exists(path):
    return None
  with tf.io.gfile.GFile(path) as f:
    info = json.load(f)
  if 'checkpoint' not in info and 'prefix' in info:
    info = dict(info, checkpoint=info['prefix'], legacy=True)
  return info


def best_checkpoint(workdir: str) -> str:
  """The prefix of the kept best checkpoint (for --checkpoint=best).

  Raises:
    FileNotFoundError: W/best holds no pointer yet.
  """
  info = read_best(workdir)
  if info is None:
    raise FileNotFoundError(
        f'No best checkpoint in {best_dir(workdir)} yet; run '
        f'python eval/evaluate.py --workdir={workdir} --watch (or set '
        'config.eval.every_steps) to keep one, or pass a checkpoint path.')
  return os.path.join(best_dir(workdir), info['checkpoint'])
