"""What the evaluator has done, keyed on a checkpoint's identity.

A step is not enough to name a checkpoint: after a failed save (a stub index
on a full disk) the trainer resumes and saves the same step again. A
checkpoint's identity is its step plus its .index file's size and
modification time; W/eval/done_step{N}_{FP}.json records the identity
evaluated (or skipped) at step N under the settings of fingerprint FP
(`settings.py`), so a re-saved step, or a watcher with other settings,
evaluates again. FP None is the group of unknown settings: the un-keyed
results_step{N}.json and done_step{N}.json of older evaluators.

Held copies (W/eval/held-{N}/) keep the checkpoint's files out of the
trainer's checkpoint manager's reach; identity.json, written last, records
whose files they are and marks the hold complete.
"""

import json
import os
import re
from typing import Any, Dict, Iterator, Optional

import tensorflow as tf

from bigbigan_tf import files
from bigbigan_tf.evaluation import best

EVAL_DIR = 'eval'
# W/eval/held-{step}/: a checkpoint's files, held while it is evaluated.
HELD_PREFIX = 'held-'
IDENTITY_JSON = 'identity.json'
EVALUATED, SKIPPED = 'evaluated', 'skipped'

Identity = Dict[str, int]


Fingerprint = Optional[str]


def _suffix(fp: Fingerprint) -> str:
  return '' if fp is None else f'_{fp}'


def results_path(workdir: str, step: int, fp: Fingerprint = None) -> str:
  """W/eval/results_step{N}_{FP}.json (results_step{N}.json for FP None)."""
  return os.path.join(workdir, EVAL_DIR,
                      f'results_step{step}{_suffix(fp)}.json')


def _done_path(workdir: str, step: int, fp: Fingerprint) -> str:
  return os.path.join(workdir, EVAL_DIR, f'done_step{step}{_suffix(fp)}.json')


def held_dir(workdir: str, step: int) -> str:
  return os.path.join(workdir, EVAL_DIR, f'{HELD_PREFIX}{step}')


def identity(checkpoint: str) -> Optional[Identity]:
  """{'index_size', 'index_mtime_ns'} of a checkpoint prefix; None if gone."""
  try:
    stat = tf.io.gfile.stat(checkpoint + '.index')
  except tf.errors.NotFoundError:
    return None
  return {'index_size': int(stat.length),
          'index_mtime_ns': int(stat.mtime_nsec)}


def _read_json(path: str) -> Optional[Dict[str, Any]]:
  try:
    with tf.io.gfile.GFile(path) as f:
      return json.load(f)
  except (tf.errors.NotFoundError, ValueError):
    return None


def record(workdir: str, step: int, ident: Optional[Identity], status: str,
           why: str = '', fp: Fingerprint = None) -> None:
  """Records that this identity of `step` was evaluated or skipped under the
  settings of fingerprint `fp`."""
  files.write_json(_done_path(workdir, step, fp),
                   {'step': int(step), 'identity': ident, 'status': status,
                    'why': why})


def entry(workdir: str, step: int,
          fp: Fingerprint = None) -> Optional[Dict[str, Any]]:
  """The ledger entry of `step` under `fp`; a results file with these
  settings and no entry (a one-off evaluate.py's, an older evaluator's)
  counts as evaluated, identity unknown."""
  found = _read_json(_done_path(workdir, step, fp))
  if found is None and tf.io.gfile.exists(results_path(workdir, step, fp)):
    return {'step': step, 'identity': None, 'status': EVALUATED}
  return found


def is_done(workdir: str, step: int, ident: Optional[Identity] = None,
            fp: Fingerprint = None) -> bool:
  """Whether this checkpoint (step and, when given, identity) was evaluated
  or skipped already under `fp`."""
  found = entry(workdir, step, fp)
  if found is None:
    return False
  return ident is None or found['identity'] in (None, ident)


def evaluated(workdir: str, step: int, ident: Optional[Identity],
              fp: Fingerprint = None) -> bool:
  """Whether a readable checkpoint of `step` (this identity, when the
  checkpoint still exists) was evaluated under `fp`, not merely skipped."""
  found = entry(workdir, step, fp)
  return (found is not None and found['status'] == EVALUATED and
          (ident is None or found['identity'] in (None, ident)))


def results(workdir: str, fp: Fingerprint = None
            ) -> Iterator[Dict[str, Any]]:
  """Every result of W/eval under `fp`, with its ledger entry."""
  pattern = os.path.join(workdir, EVAL_DIR,
                         f'results_step*{_suffix(fp)}.json')
  name = re.compile(rf'results_step(\d+){re.escape(_suffix(fp))}\.json$')
  for path in sorted(tf.io.gfile.glob(pattern)):
    match = name.search(path)
    result = _read_json(path) if match else None
    if result is None or not isinstance(result.get('metrics'), dict):
      continue
    step = int(match.group(1))
    yield {'step': step, 'metrics': result['metrics'],
           'entry': entry(workdir, step, fp)}


def hold(workdir: str, checkpoint: str, step: int,
         ident: Identity) -> Optional[str]:
  """Holds `checkpoint` in W/eval/held-{step}/; its held prefix, or None.

  None when the checkpoint is gone or incomplete (nothing is left behind).
  """
  held = held_dir(workdir, step)
  # Replaces a killed watcher's partial hold, or an older save's.
  if not best.hold_into(checkpoint, held):
    return None
  files.write_json(os.path.join(held, IDENTITY_JSON), ident)
  return os.path.join(held, os.path.basename(checkpoint))


def release(workdir: str, step: int) -> None:
  held = held_dir(workdir, step)
  if tf.io.gfile.exists(held):
    tf.io.gfile.rmtree(held)


def held(workdir: str) -> Dict[int, tuple]:
  """{step: (held prefix, identity)} of complete holds; incomplete ones (a
  watcher killed while linking) are removed."""
  found = {}
  for path in tf.io.gfile.glob(os.path.join(workdir, EVAL_DIR,
                                            HELD_PREFIX + '*')):
    step_text = os.path.basename(path.rstrip('/'))[len(HELD_PREFIX):]
    if not step_text.isdigit():
      continue
    step = int(step_text)
    prefix = os.path.join(path, f'ckpt-{step}')
    ident = _read_json(os.path.join(path, IDENTITY_JSON))
    if ident is None or not best.is_complete(prefix):
      tf.io.gfile.rmtree(path)
    else:
      found[step] = (prefix, ident)
  return found
