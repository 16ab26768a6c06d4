"""The best-checkpoint rule and protocol (W/best/), and its crash safety.

The checkpoints are stand-in files (ckpt-N.index / .data) and the metric is
injected. A "kill" is an exception no code catches, raised from one step of
the best update; a "restart" is a new `watch.watch` call. The watcher's own
rules are in watch_test.py, which shares these helpers.
"""

import errno
import json
import os
import shutil
import tempfile
import unittest
from unittest import mock

import ml_collections
import tensorflow as tf

from bigbigan_tf import checkpoints
from bigbigan_tf.evaluation import best
from bigbigan_tf.evaluation import ledger
from bigbigan_tf.evaluation import settings as settings_lib
from bigbigan_tf.evaluation import watch

# The lease as the trainer's would be on a local disk.
CONFIG = ml_collections.ConfigDict({'train': {'lease': 'lock',
                                              'lease_expiry_s': 300.0}})


class Killed(BaseException):
  """Stands in for SIGKILL: nothing in the library catches it."""


def make_checkpoint(workdir, step, content=None):
  ckpt_dir = os.path.join(workdir, 'checkpoints')
  os.makedirs(ckpt_dir, exist_ok=True)
  prefix = os.path.join(ckpt_dir, f'ckpt-{step}')
  for suffix in ('.index', '.data-00000-of-00001'):
    # New files, as the checkpoint manager writes them (never in place:
    # the held and kept copies are hard links).
    with open(prefix + suffix + '.tmp', 'w') as f:
      f.write(content or f'step {step}')
    os.replace(prefix + suffix + '.tmp', prefix + suffix)
  return prefix


def delete_checkpoints(workdir):
  ckpt_dir = os.path.join(workdir, 'checkpoints')
  for name in os.listdir(ckpt_dir):
    os.remove(os.path.join(ckpt_dir, name))


def watch_once(workdir, evaluator, **kwargs):
  """One watch with test timings; its Outcome (complete, message)."""
  kwargs = dict(dict(final_step=100, select='fid', timeout_s=0.3,
                     poll_s=0.05, config=CONFIG,
                     settings=getattr(evaluator, 'settings', None)),
                **kwargs)
  return watch.watch(workdir, evaluator, **kwargs)


def kept_content(workdir):
  with open(best.best_checkpoint(workdir) + '.data-00000-of-00001') as f:
    return f.read()


class FakeEvaluator:
  """Writes results_step{N}_{FP}.json like evaluate_lib, metric = f(step).

  `settings` (None: the un-keyed files of unknown settings) are recorded in
  the result and key its file, as evaluate_lib's.
  """

  def __init__(self, workdir, metric, settings=None):
    self.workdir, self.metric, self.steps = workdir, metric, []
    self.paths, self.settings = [], settings

  def __call__(self, path, checkpoint=None, before_write=None):
    step = int(path.rsplit('-', 1)[1])
    with open(path + '.index') as f:
      if f.read() == 'stub':
        raise checkpoints.UnreadableCheckpointError(f'{path}: a stub')
    self.steps.append(step)
    self.paths.append((path, checkpoint))
    fp = settings_lib.fingerprint(self.settings)
    result = {'step': step, 'metrics': {'fid': self.metric(step),
                                        'recon_accuracy': 0.5},
              'comparable': self.settings, 'fingerprint': fp}
    if before_write is not None:
      before_write()
    os.makedirs(os.path.join(self.workdir, 'eval'), exist_ok=True)
    with open(watch.results_path(self.workdir, step, fp), 'w') as f:
      json.dump(result, f)
    return result


class BestTest(unittest.TestCase):

  def test_directions_and_nan(self):
    self.assertTrue(best.is_better('fid', 1.0, 2.0))
    self.assertFalse(best.is_better('fid', 2.0, 1.0))
    self.assertTrue(best.is_better('linear_probe', 0.9, 0.5))
    self.assertFalse(best.is_better('recon_accuracy', 0.5, 0.5))
    nan = float('nan')
    self.assertFalse(best.is_better('fid', nan, 2.0))
    self.assertFalse(best.is_better('fid', nan, None))
    self.assertTrue(best.is_better('fid', 9.0, nan))
    with self.assertRaises(best.SelectError):
      best.selection_key('nonsense')
    # NaN neither becomes the best nor blocks a later number.
    workdir = tempfile.mkdtemp()
    self.assertFalse(best.update_best(workdir, make_checkpoint(workdir, 2),
                                      2, {'fid': nan}, 'fid'))
    self.assertIsNone(best.read_best(workdir))
    self.assertTrue(best.update_best(workdir, make_checkpoint(workdir, 4),
                                     4, {'fid': 7.0}, 'fid'))
    self.assertFalse(best.update_best(workdir, make_checkpoint(workdir, 6),
                                      6, {'fid': nan}, 'fid'))
    self.assertEqual(best.read_best(workdir)['step'], 4)

  def test_copy_follows_the_injected_metric(self):
    workdir = tempfile.mkdtemp()
    fid = {2: 5.0, 4: 3.0, 6: 4.0, 8: 1.0}
    for step in (2, 4, 6, 8):
      prefix = make_checkpoint(workdir, step)
      best.update_best(workdir, prefix, step, {'fid': fid[step]}, 'fid')
      want = min((s for s in fid if s <= step), key=fid.get)
      self.assertEqual(best.read_best(workdir)['step'], want)
      self.assertEqual(kept_content(workdir), f'step {want}')
    # One immutable copy, named by the pointer; export resolves through it.
    self.assertEqual(sorted(os.listdir(os.path.join(workdir, 'best'))),
                     ['best.json', 'ckpt-8'])
    self.assertEqual(best.read_best(workdir)['checkpoint'], 'ckpt-8/ckpt-8')
    self.assertEqual(checkpoints.resolve_checkpoint(workdir, 'best'),
                     os.path.join(workdir, 'best', 'ckpt-8', 'ckpt-8'))

  def test_a_checkpoint_deleted_before_the_copy_is_not_kept(self):
    workdir = tempfile.mkdtemp()
    kept = make_checkpoint(workdir, 2)
    self.assertTrue(best.update_best(workdir, kept, 2, {'fid': 5.0}, 'fid'))
    gone = os.path.join(workdir, 'checkpoints', 'ckpt-4')  # never written
    self.assertFalse(best.update_best(workdir, gone, 4, {'fid': 1.0}, 'fid'))
    self.assertEqual(best.read_best(workdir)['step'], 2)
    self.assertEqual(kept_content(workdir), 'step 2')

  def test_no_best_yet_is_a_clear_error(self):
    with self.assertRaisesRegex(FileNotFoundError, '--watch'):
      checkpoints.resolve_checkpoint(tempfile.mkdtemp(), 'best')

  def test_the_older_layout_is_read_then_migrated(self):
    workdir = tempfile.mkdtemp()
    legacy = os.path.join(workdir, 'best')
    os.makedirs(legacy)
    for suffix in ('.index', '.data-00000-of-00001'):
      with open(os.path.join(legacy, 'ckpt-2' + suffix), 'w') as f:
        f.write('step 2')
    with open(os.path.join(legacy, 'best.json'), 'w') as f:
      json.dump({'step': 2, 'metric': 'fid', 'value': 3.0,
                 'metrics': {'fid': 3.0}, 'prefix': 'ckpt-2'}, f)
    self.assertEqual(checkpoints.resolve_checkpoint(workdir, 'best'),
                     os.path.join(legacy, 'ckpt-2'))
    # The older writer's leftovers, and a newer, better result.
    os.makedirs(os.path.join(workdir, 'best.old'))
    os.makedirs(os.path.join(workdir, 'best.tmp-4'))
    make_checkpoint(workdir, 4)
    evaluator = FakeEvaluator(workdir, lambda s: 9.0)
    watch_once(workdir, evaluator)
    self.assertEqual(best.read_best(workdir)['step'], 2)  # 9 > 3
    self.assertEqual(sorted(os.listdir(legacy)), ['best.json', 'ckpt-2'])
    self.assertEqual(kept_content(workdir), 'step 2')
    self.assertFalse([n for n in os.listdir(workdir) if n.startswith('best.')])


  def test_the_only_copy_an_older_writer_left_mid_swap_is_kept(self):
    workdir = tempfile.mkdtemp()

    def legacy_best(name, step, value):
      directory = os.path.join(workdir, name)
      os.makedirs(directory)
      for suffix in ('.index', '.data-00000-of-00001'):
        with open(os.path.join(directory, f'ckpt-{step}{suffix}'), 'w') as f:
          f.write(f'step {step}')
      with open(os.path.join(directory, 'best.json'), 'w') as f:
        json.dump({'step': step, 'metric': 'fid', 'value': value,
                   'metrics': {'fid': value}, 'prefix': f'ckpt-{step}'}, f)

    # Killed after renaming W/best to W/best.old: no W/best, no results.
    legacy_best('best.old', 2, 5.0)
    self.assertEqual(best.clean(workdir), [])  # the only copy stays
    self.assertTrue(os.path.isdir(os.path.join(workdir, 'best.old')))
    # ... and before renaming its whole new copy W/best.tmp-4 in.
    legacy_best('best.tmp-4', 4, 3.0)
    make_checkpoint(workdir, 6)
    watch_once(workdir, FakeEvaluator(workdir, lambda s: 9.0))
    self.assertEqual(best.read_best(workdir)['step'], 4)
    self.assertEqual(kept_content(workdir), 'step 4')
    # Kept in W/best first, only then the leftovers went.
    self.assertFalse([n for n in os.listdir(workdir) if n.startswith('best.')])


class CrashTest(unittest.TestCase):
  """A kill between any two steps of the best update, then a restart."""

  def _killed_then_restarted(self, target, attribute, side_effect=Killed):
    workdir = tempfile.mkdtemp()
    make_checkpoint(workdir, 2)
    fid = {2: 5.0, 4: 1.0, 6: 3.0}
    evaluator = FakeEvaluator(workdir, fid.get)
    watch_once(workdir, evaluator)
    self.assertEqual(best.read_best(workdir)['step'], 2)
    make_checkpoint(workdir, 4)
    with mock.patch.object(target, attribute, side_effect=side_effect):
      with self.assertRaises(Killed):
        watch_once(workdir, evaluator)
    # The trainer deletes checkpoint 4 meanwhile: its held copy remains.
    delete_checkpoints(workdir)
    # Readers see a whole best at every moment.
    self.assertIn(kept_content(workdir), ('step 2', 'step 4'))
    make_checkpoint(workdir, 6)
    watch_once(workdir, evaluator)
    self.assertEqual(best.read_best(workdir)['step'], 4, attribute)
    self.assertEqual(kept_content(workdir), 'step 4')
    self.assertEqual(sorted(os.listdir(os.path.join(workdir, 'best'))),
                     ['best.json', 'ckpt-4'])
    self.assertFalse([n for n in os.listdir(os.path.join(workdir, 'eval'))
                      if n.startswith('held-')])
    return evaluator

  def test_killed_after_the_results(self):
    evaluator = self._killed_then_restarted(ledger, 'record')
    self.assertEqual(evaluator.steps, [2, 4, 6])

  def test_killed_before_and_during_the_copy(self):
    self._killed_then_restarted(best, '_copy')

    def partial_copy(source, copy_dir):
      os.makedirs(copy_dir)
      shutil.copy(source + '.index', copy_dir)
      raise Killed

    self._killed_then_restarted(best, '_copy', partial_copy)

  def test_killed_after_the_copy(self):
    self._killed_then_restarted(best, '_write_pointer')

  def test_killed_after_the_pointer(self):
    self._killed_then_restarted(best, '_remove_copy')

  def test_object_store_copies_and_renames_killed_midway(self):
    """gs://: no hard links, a rename is a copy and a delete per object."""
    workdir = tempfile.mkdtemp()
    real_copy, real_remove = tf.io.gfile.copy, tf.io.gfile.remove
    calls = {'copy': 0, 'kill_at': None, 'dir_renames': 0}

    def copy(src, dst, overwrite=False):
      calls['copy'] += 1
      if calls['copy'] == calls['kill_at']:
        raise Killed
      real_copy(src, dst, overwrite=overwrite)

    def rename(src, dst, overwrite=False):
      if os.path.isdir(src):
        calls['dir_renames'] += 1
      copy(src, dst, overwrite)  # the new object appears whole, then
      real_remove(src)           # the old name goes

    def link(*unused_args):
      raise OSError(errno.EXDEV, 'cross-device link')

    fid = {2: 5.0, 4: 1.0, 6: 3.0}
    evaluator = FakeEvaluator(workdir, fid.get)
    with mock.patch.object(tf.io.gfile, 'copy', copy), \
         mock.patch.object(tf.io.gfile, 'rename', rename), \
         mock.patch.object(os, 'link', link):
      make_checkpoint(workdir, 2)
      watch_once(workdir, evaluator)
      make_checkpoint(workdir, 4)
      # Every copy of step 4's update, one after another, is the last.
      for kill_at in range(1, 12):
        calls.update(copy=0, kill_at=kill_at)
        try:
          watch_once(workdir, evaluator)
          break
        except Killed:
          self.assertIn(kept_content(workdir), ('step 2', 'step 4'))
      calls['kill_at'] = None
      watch_once(workdir, evaluator)
    self.assertGreater(kill_at, 4)
    self.assertEqual(calls['dir_renames'], 0)
    self.assertEqual(best.read_best(workdir)['step'], 4)
    self.assertEqual(kept_content(workdir), 'step 4')
    self.assertEqual(sorted(os.listdir(os.path.join(workdir, 'best'))),
                     ['best.json', 'ckpt-4'])

  def test_rebuilt_from_the_results_when_a_checkpoint_is_gone(self):
    workdir = tempfile.mkdtemp()
    for step in (2, 4, 6):
      make_checkpoint(workdir, step)
    fid = {2: 3.0, 4: 1.0, 6: 2.0}
    watch_once(workdir, FakeEvaluator(workdir, fid.get), select=None)
    self.assertIsNone(best.read_best(workdir))
    os.remove(os.path.join(workdir, 'checkpoints', 'ckpt-4.index'))
    with self.assertLogs(level='WARNING') as logs:
      watch_once(workdir, FakeEvaluator(workdir, fid.get))
    # Step 4 was best but its checkpoint is gone: step 6 is kept, and why.
    self.assertEqual(best.read_best(workdir)['step'], 6)
    self.assertIn('Step 4 has the best fid', '\n'.join(logs.output))
    self.assertIn('no longer on disk', '\n'.join(logs.output))


if __name__ == '__main__':
  unittest.main()
