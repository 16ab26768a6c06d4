"""Two MultiWorkerMirroredStrategy workers on loopback: chief-only writes.

Two processes with TF_CONFIG (ports on 127.0.0.1) train the tiny config 4
steps, then resume to 8, as `train.py --strategy=multi_worker` does (a small
driver calls the same functions, then reports a checksum of its variables in
a file outside the workdir, to compare the workers' weights).
"""

import glob
import json
import os
import socket
import subprocess
import sys
import tempfile

import tensorflow as tf

import testing

_DRIVER = r'''
import json, sys
import numpy as np
from bigbigan_tf import distribute, train_lib
from bigbigan_tf.configs import tiny

workdir, steps, report = sys.argv[1], int(sys.argv[2]), sys.argv[3]
strategy = distribute.make_strategy(kind='multi_worker')  # as train.py
config = tiny.get_config()
with config.unlocked():
  config.num_train_steps = steps
  for field in ('steps_per_loop', 'checkpoint_every', 'grid_every',
                'log_every'):
    config.train[field] = 4
result = train_lib.train_and_evaluate(config, workdir, strategy=strategy)
state = result['state']
sums = {}
for group in ('g_vars', 'e_vars', 'd_vars'):
  for v in getattr(state, group):
    sums[f'{group}/{v.path}'] = float(np.sum(np.asarray(v.numpy(),
                                                        np.float64)))
with open(report, 'w') as f:
  json.dump({'step': int(state.step.numpy()), 'chief':
             distribute.is_chief(strategy), 'sums': sums}, f)
'''


def _free_ports(n):
  sockets = [socket.socket() for _ in range(n)]
  for s in sockets:
    s.bind(('127.0.0.1', 0))
  ports = [s.getsockname()[1] for s in sockets]
  for s in sockets:
    s.close()
  return ports


class MultiWorkerTest(tf.test.TestCase):

  def _run_workers(self, workdir, steps, reports_dir):
    workers = [f'127.0.0.1:{p}' for p in _free_ports(2)]
    procs = []
    for index in range(2):
      env = dict(os.environ, PYTHONPATH=testing.REPO, TF_CPP_MIN_LOG_LEVEL='2',
                 TF_CONFIG=json.dumps({'cluster': {'worker': workers},
                                       'task': {'type': 'worker',
                                                'index': index}}))
      report = os.path.join(reports_dir, f'worker{index}_{steps}.json')
      procs.append((report, subprocess.Popen(
          [sys.executable, '-c', _DRIVER, workdir, str(steps), report],
          cwd=testing.REPO, env=env, stdout=subprocess.PIPE,
          stderr=subprocess.STDOUT, text=True)))
    reports = []
    try:
      for report, proc in procs:
        output, _ = proc.communicate(timeout=900)
        self.assertEqual(proc.returncode, 0, output[-4000:])
        with open(report) as f:
          reports.append(json.load(f))
    finally:
      for _, proc in procs:  # One failed: the other would wait for it.
        if proc.poll() is None:
          proc.kill()
          proc.communicate()
    return reports

  def test_chief_writes_alone_and_workers_stay_equal(self):
    workdir = self.create_tempdir().full_path
    reports_dir = tempfile.mkdtemp()  # Outside the workdir.
    for steps in (4, 8):
      reports = self._run_workers(workdir, steps, reports_dir)
      chief, other = reports
      self.assertTrue(chief['chief'])
      self.assertFalse(other['chief'])
      self.assertEqual(chief['step'], steps)
      self.assertEqual(other['step'], steps)
      # Gradients are all-reduced: the same update on both workers.
      self.assertEqual(sorted(chief['sums']), sorted(other['sums']))
      self.assertGreater(len(chief['sums']), 50)
      for name, value in chief['sums'].items():
        self.assertEqual(value, other['sums'][name], msg=name)
      events = glob.glob(os.path.join(workdir, 'train', 'events.out.*'))
      self.assertLen(events, 1 if steps == 4 else 2)  # One per run.
      # The chief alone appended to hardware.json: one entry per run.
      with open(os.path.join(workdir, 'hardware.json')) as f:
        self.assertLen(json.load(f)['runs'], 1 if steps == 4 else 2)

    self.assertEqual(sorted(os.listdir(workdir)),
                     ['checkpoints', 'config.json', 'grids', 'hardware.json',
                      'train'])
    self.assertFalse(glob.glob(os.path.join(workdir, '**', 'workertemp_*'),
                               recursive=True))
    names = sorted(os.listdir(os.path.join(workdir, 'checkpoints')))
    self.assertEqual(names, ['checkpoint'] + [
        f'ckpt-{s}.{ext}' for s in (0, 4, 8)
        for ext in ('data-00000-of-00001', 'index')])
    self.assertEqual(sorted(os.listdir(os.path.join(workdir, 'grids'))),
                     [f'{k}_{s:08d}.png' for k in ('reconstructions',
                                                   'samples')
                      for s in (4, 8)])
    reader = tf.train.load_checkpoint(os.path.join(workdir, 'checkpoints',
                                                   'ckpt-8'))
    self.assertEqual(int(reader.get_tensor('step/.ATTRIBUTES/VARIABLE_VALUE')),
                     8)


if __name__ == '__main__':
  tf.test.main()
