"""Faults a user meets: unreadable checkpoints, bad inputs, a wrong --overwrite.

One tiny 4-step run (checkpoints 0, 2, 4) is copied into damaged variants;
train.py / export.py then run on them side by side as users run them.
"""

import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile

import pytest
import tensorflow as tf

from bigbigan_tf import checkpoints
from bigbigan_tf import export_lib
import testing

REPO = testing.REPO
TINY = os.path.join(REPO, 'bigbigan_tf', 'configs', 'tiny.py')


def _start(script, *args, **env_vars):
  env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL='2',
             **env_vars)
  return subprocess.Popen([sys.executable, os.path.join(REPO, script), *args],
                          cwd=REPO, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)


def _truncate(checkpoint):
  for data in glob.glob(checkpoint + '.data-*'):
    with open(data, 'r+b') as f:
      f.truncate(os.path.getsize(data) // 2)


def _listing(root):
  return sorted(os.path.relpath(os.path.join(d, f), root)
                for d, _, files in os.walk(root) for f in files)


class CheckpointReadingTest(tf.test.TestCase):
  """checkpoint_problem / latest_readable on a small tf.train.Checkpoint."""

  def test_truncated_and_damaged_checkpoints_are_skipped_never_deleted(self):
    directory = self.create_tempdir().full_path
    ckpt = tf.train.Checkpoint(v=tf.Variable(tf.range(500.0)))
    manager = tf.train.CheckpointManager(ckpt, directory, max_to_keep=5)
    for step in (1, 2, 3):
      manager.save(checkpoint_number=step)
    self.assertIsNone(checkpoints.checkpoint_problem(manager.latest_checkpoint))
    _truncate(os.path.join(directory, 'ckpt-3'))
    with open(os.path.join(directory, 'ckpt-2.index'), 'wb') as f:
      f.write(b'not an index')
    before = _listing(directory)
    self.assertRegex(checkpoints.checkpoint_problem(
        os.path.join(directory, 'ckpt-3')),
                     r'data file .*ckpt-3\.data-00000-of-00001 cannot be read'
                     r'.*IndexError')
    self.assertRegex(checkpoints.checkpoint_problem(
        os.path.join(directory, 'ckpt-2')), r'index .*ckpt-2\.index')
    with self.assertLogs(level='WARNING') as logs:
      self.assertEqual(checkpoints.latest_readable(directory),
                       os.path.join(directory, 'ckpt-1'))
    self.assertRegex('\n'.join(logs.output), r'ckpt-3 is unreadable')
    self.assertRegex('\n'.join(logs.output), r'ckpt-2 is unreadable')
    _truncate(os.path.join(directory, 'ckpt-1'))
    with self.assertRaisesRegex(checkpoints.UnreadableCheckpointError,
                                r'No checkpoint in .* can be read'):
      checkpoints.latest_readable(directory)
    self.assertEqual(_listing(directory), before)
    self.assertIsNone(checkpoints.latest_readable(
        self.create_tempdir().full_path))


@pytest.mark.slow
class FaultsTest(tf.test.TestCase):
  """train.py / export.py on damaged workdirs and bad arguments."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.root = tempfile.mkdtemp()
    cls.workdir = os.path.join(cls.root, 'run')
    testing.train_tiny(cls.workdir, steps=4)

    def copy(name):
      path = os.path.join(cls.root, name)
      shutil.copytree(cls.workdir, path)
      return path

    # The latest checkpoint truncated (a partial copy, a full disk).
    cls.resume_dir = copy('truncated_resume')
    _truncate(os.path.join(cls.resume_dir, 'checkpoints', 'ckpt-4'))
    cls.export_src = copy('truncated_export')
    _truncate(os.path.join(cls.export_src, 'checkpoints', 'ckpt-4'))
    cls.all_bad = copy('all_truncated')
    for index in glob.glob(os.path.join(cls.all_bad, 'checkpoints',
                                        'ckpt-*.index')):
      _truncate(index[:-len('.index')])
    cls.corrupt = copy('corrupt_config')
    with open(os.path.join(cls.corrupt, 'config.json'), 'w') as f:
      f.write('{"seed": 0, "model": {')
    cls.a_file = os.path.join(cls.root, 'a_file')
    with open(cls.a_file, 'w') as f:
      f.write('not a workdir')
    cls.exports = os.path.join(cls.root, 'exports')
    os.makedirs(cls.exports)
    cls.fallback_export = os.path.join(cls.exports, 'from_fallback')
    cls.before = {name: _listing(path) for name, path in (
        ('all_bad', cls.all_bad), ('corrupt', cls.corrupt),
        ('workdir', cls.workdir))}
    export = lambda w, e, *a: _start('export.py', f'--workdir={w}',
                                     f'--export_dir={e}',
                                     '--standing_stats_batches=0', *a)
    train = lambda w, *a: _start('train.py', f'--workdir={w}',
                                 f'--config={TINY}', *a)
    procs = {
        'resume': train(cls.resume_dir, '--config.num_train_steps=4'),
        'export_fallback': export(cls.export_src, cls.fallback_export),
        'export_none_readable': export(
            cls.all_bad, os.path.join(cls.exports, 'none')),
        'missing_config': _start('train.py', f'--workdir={cls.root}/new1',
                                 f'--config={cls.root}/no_such_config.py'),
        'unknown_field': train(f'{cls.root}/new2',
                               '--config.no_such_field=1'),
        'workdir_is_file': train(cls.a_file),
        'corrupt_config_resume': train(cls.corrupt),
        'corrupt_config_export': export(
            cls.corrupt, os.path.join(cls.exports, 'corrupt')),
        'overwrite_workdir': export(cls.workdir, cls.workdir, '--overwrite'),
        # An ISA cap oneDNN does not know, in each command line.
        'bad_isa_train': _start('train.py', f'--workdir={cls.root}/new3',
                                f'--config={TINY}',
                                ONEDNN_MAX_CPU_ISA='AVX3'),
        'bad_isa_export': _start(
            'export.py', f'--workdir={cls.workdir}',
            f'--export_dir={os.path.join(cls.exports, "bad_isa")}',
            ONEDNN_MAX_CPU_ISA='AVX3'),
        'bad_isa_evaluate': _start(
            os.path.join('eval', 'evaluate.py'), f'--workdir={cls.workdir}',
            '--metrics=grids', ONEDNN_MAX_CPU_ISA='AVX3'),
    }
    cls.cli = {}
    for name, proc in procs.items():
      out, err = proc.communicate(timeout=900)
      cls.cli[name] = (proc.returncode, out, err)

  @classmethod
  def tearDownClass(cls):
    shutil.rmtree(cls.root, ignore_errors=True)
    super().tearDownClass()

  def test_truncated_latest_checkpoint_resumes_from_the_one_before(self):
    returncode, _, err = self.cli['resume']
    self.assertEqual(returncode, 0, err[-3000:])
    self.assertRegex(err, r'ckpt-4 is unreadable.*data file .*ckpt-4\.data-'
                     r'00000-of-00001 cannot be read')
    self.assertIn(f'Resumed from {self.resume_dir}/checkpoints/ckpt-2 '
                  '(step 2)', err)
    # Trained on to step 4 again: the new ckpt-4 reads.
    self.assertIsNone(checkpoints.checkpoint_problem(
        os.path.join(self.resume_dir, 'checkpoints', 'ckpt-4')))

  def test_export_uses_the_newest_readable_checkpoint(self):
    returncode, out, err = self.cli['export_fallback']
    self.assertEqual(returncode, 0, err[-3000:])
    self.assertIn(self.fallback_export, out)
    self.assertRegex(err, r'ckpt-4 is unreadable')
    with open(os.path.join(self.fallback_export, 'assets',
                           'export_info.json')) as f:
      info = json.load(f)
    self.assertEqual(info['checkpoint'],
                     os.path.join(self.export_src, 'checkpoints', 'ckpt-2'))
    self.assertEqual(int(tf.saved_model.load(
        self.fallback_export).step.numpy()), 2)

  def test_bad_inputs_are_one_clear_error_and_exit_2(self):
    cases = {
        'export_none_readable': r'No checkpoint in .*all_truncated/'
                                r'checkpoints can be read',
        'missing_config': r'--config=.*no_such_config.py cannot be loaded '
                          r'\(.*No such file',
        'unknown_field': r'--config.no_such_field: the config has no field '
                         "'no_such_field'",
        'workdir_is_file': r'--workdir=.*a_file is a file, not a directory',
        'corrupt_config_resume': r'.*corrupt_config/config.json is not a '
                                 'valid config',
        'corrupt_config_export': r'.*corrupt_config/config.json is not a '
                                 'valid config',
        'overwrite_workdir': r'Refusing to --overwrite .*run: it is, or '
                             'contains, the workdir',
        **{f'bad_isa_{script}': r"ONEDNN_MAX_CPU_ISA='AVX3' is not an ISA "
                                'oneDNN knows.*or unset it'
           for script in ('train', 'export', 'evaluate')},
    }
    for name, pattern in cases.items():
      with self.subTest(name):
        returncode, _, err = self.cli[name]
        self.assertEqual(returncode, 2, err[-3000:])
        self.assertRegex(err, 'error: ' + pattern)
        self.assertNotIn('Traceback', err)
    # Nothing half-written, nothing deleted.
    for name in ('new1', 'new2', 'new3'):
      self.assertFalse(os.path.exists(os.path.join(self.root, name)))
    self.assertEqual(sorted(os.listdir(self.exports)), ['from_fallback'])
    with open(self.a_file) as f:
      self.assertEqual(f.read(), 'not a workdir')
    self.assertEqual(_listing(self.all_bad), self.before['all_bad'])
    self.assertEqual(_listing(self.corrupt), self.before['corrupt'])

  def test_overwrite_refuses_all_but_an_export(self):
    workdir = self.workdir
    other = os.path.join(self.root, 'other_files')
    os.makedirs(other)
    with open(os.path.join(other, 'notes.txt'), 'w') as f:
      f.write('mine')
    refused = {
        'the workdir': (workdir, 'is, or contains, the workdir'),
        'its parent': (self.root, 'is, or contains, the workdir'),
        'another workdir': (self.corrupt, 'training workdir'),
        'other files': (other, 'not a bigbigan-tf export.*notes.txt'),
        'a file': (self.a_file, 'is a file'),
        'home': (os.path.expanduser('~'), 'home directory'),
        'root': ('/', 'home directory'),
        'cwd': (os.getcwd(), 'current directory'),
    }
    for name, (path, pattern) in refused.items():
      with self.subTest(name):
        # Without a workdir too: the other checks hold on their own.
        for given in (None, workdir):
          if given is None and 'workdir' in pattern:
            continue
          if given is not None and path in ('/',):
            pattern = 'contains, the workdir'
          with self.assertRaisesRegex(export_lib.OverwriteRefusedError,
                                      'Refusing to --overwrite .*' + pattern):
            export_lib.check_overwritable(path, workdir=given)
    # An export with a stranger's file in it is refused too.
    export = self.fallback_export
    self.assertTrue(os.path.exists(os.path.join(export, 'saved_model.pb')))
    export_lib.check_overwritable(export, workdir=workdir)
    extra = os.path.join(self.root, 'export_plus')
    shutil.copytree(export, extra)
    with open(os.path.join(extra, 'notes.txt'), 'w') as f:
      f.write('mine')
    with self.assertRaisesRegex(export_lib.OverwriteRefusedError,
                                'besides the module it holds notes.txt'):
      export_lib.check_overwritable(extra, workdir=workdir)
    # Absent or empty: nothing to delete.
    export_lib.check_overwritable(os.path.join(self.root, 'absent'))
    empty = os.path.join(self.root, 'empty')
    os.makedirs(empty)
    export_lib.check_overwritable(empty, workdir=workdir)
    self.assertEqual(os.listdir(other), ['notes.txt'])
    self.assertEqual(_listing(workdir), self.before['workdir'])

  def test_reexport_with_overwrite_replaces_a_previous_export(self):
    target = os.path.join(self.root, 'reexport')
    shutil.copytree(self.fallback_export, target)
    export_lib.export(self.workdir, target, overwrite=True,
                      standing_stats_batches=0)
    self.assertEqual(int(tf.saved_model.load(target).step.numpy()), 4)
    self.assertFalse([p for p in os.listdir(self.root)
                      if '.tmp-' in p or '.old-' in p])


if __name__ == '__main__':
  tf.test.main()
