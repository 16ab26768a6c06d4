"""The gs:// emulator harness (gcs_emulator.py) through TensorFlow's own GCS
file system and google-cloud-storage."""

import os
import subprocess
import sys
import threading
import time
import uuid

import pytest
import tensorflow as tf

import gcs_emulator


def setUpModule():
  gcs_emulator.require_emulator().apply()


def tearDownModule():
  gcs_emulator.unapply()


def _fresh(name: str) -> str:
  """A gs:// path no other test uses (the emulator is shared)."""
  return gcs_emulator.url(f'{name}-{uuid.uuid4().hex[:8]}')


@pytest.mark.slow  # starts fake-gcs-server

def _in_fresh_process(code: str) -> subprocess.CompletedProcess:
  """Runs `code` in a new Python routed to the emulator (env()'s settings
  are read when TensorFlow loads, so they apply there from the start)."""
  env = dict(os.environ, **gcs_emulator.env(), TF_CPP_MIN_LOG_LEVEL='2')
  return subprocess.run([sys.executable, '-c', code], env=env,
                        capture_output=True, text=True, timeout=120,
                        check=False)

class GcsEmulatorTest(tf.test.TestCase):

  def tearDown(self):
    gcs_emulator.clear()
    super().tearDown()

  def test_gfile_write_read_list_rename_and_remove(self):
    root = _fresh('gfile')
    tf.io.gfile.makedirs(f'{root}/d/sub')
    with tf.io.gfile.GFile(f'{root}/d/a.txt', 'w') as f:
      f.write('alpha')
    with tf.io.gfile.GFile(f'{root}/d/sub/b.bin', 'wb') as f:
      f.write(os.urandom(3 << 20))  # past one upload chunk's worth of small
    with tf.io.gfile.GFile(f'{root}/d/a.txt') as f:
      self.assertEqual(f.read(), 'alpha')
    self.assertCountEqual(tf.io.gfile.listdir(f'{root}/d'), ['a.txt', 'sub/'])
    tf.io.gfile.rename(f'{root}/d/a.txt', f'{root}/d/c.txt')
    self.assertFalse(tf.io.gfile.exists(f'{root}/d/a.txt'))
    # A directory rename: TF asks storageLayout, then copies object by object.
    tf.io.gfile.rename(f'{root}/d', f'{root}/e')
    self.assertEqual(tf.io.gfile.stat(f'{root}/e/sub/b.bin').length, 3 << 20)
    with tf.io.gfile.GFile(f'{root}/e/c.txt') as f:
      self.assertEqual(f.read(), 'alpha')
    self.assertIn('GET', {r.method for r in gcs_emulator.requests()
                          if r.path.endswith('/storageLayout')})
    tf.io.gfile.rmtree(root)
    self.assertEqual(tf.io.gfile.glob(f'{root}/*'), [])

  def test_checkpoint_manager_round_trip(self):
    directory = _fresh('ckpt')
    variable = tf.Variable(tf.zeros([1000]))
    ckpt = tf.train.Checkpoint(v=variable)
    manager = tf.train.CheckpointManager(ckpt, directory, max_to_keep=2)
    for step in (1, 2, 3):
      variable.assign(tf.fill([1000], float(step)))
      manager.save(checkpoint_number=step)
    self.assertEqual(manager.latest_checkpoint, f'{directory}/ckpt-3')
    self.assertEqual(
        [os.path.basename(p) for p in manager.checkpoints], ['ckpt-2', 'ckpt-3'])
    self.assertFalse(tf.io.gfile.glob(f'{directory}/ckpt-1.*'))
    # Read back in a fresh process: in the process that wrote them, TF 2.21's
    # checkpoint reader hung on gs:// here (no request reached the front).
    code = ('import tensorflow as tf\n'
            f'r = tf.train.load_checkpoint({directory + "/ckpt-2"!r})\n'
            'print(float(r.get_tensor("v/.ATTRIBUTES/VARIABLE_VALUE").sum()))')
    run = _in_fresh_process(code)
    self.assertEqual(run.returncode, 0, run.stderr[-2000:])
    self.assertEqual(float(run.stdout.split()[-1]), 2000.0)

  def test_create_if_absent_has_one_winner_among_8_threads(self):
    # pylint: disable-next=g-import-not-at-top
    from google.api_core import exceptions
    from google.cloud import storage  # pylint: disable=g-import-not-at-top
    bucket = storage.Client().bucket(gcs_emulator.require_emulator().bucket)
    for round_ in range(3):
      name = f'race-{uuid.uuid4().hex}'
      won, lost, failed = [], [], []
      start = threading.Barrier(8)

      def contend(i):
        start.wait()
        try:
          bucket.blob(name).upload_from_string(  # pylint: disable=cell-var-from-loop
              str(i), if_generation_match=0)
          won.append(i)  # pylint: disable=cell-var-from-loop
        except exceptions.PreconditionFailed:
          lost.append(i)  # pylint: disable=cell-var-from-loop
        except Exception as e:  # pylint: disable=broad-except
          failed.append(e)  # pylint: disable=cell-var-from-loop

      threads = [threading.Thread(target=contend, args=(i,)) for i in range(8)]
      for t in threads:
        t.start()
      for t in threads:
        t.join()
      self.assertEqual(failed, [], f'round {round_}')
      self.assertLen(won, 1, f'round {round_}')
      self.assertLen(lost, 7, f'round {round_}')
      self.assertEqual(bucket.blob(name).download_as_text(), str(won[0]))

  def test_injected_403_and_429_are_errors_in_tf_gfile(self):
    path = _fresh('faulty')
    with tf.io.gfile.GFile(path, 'w') as f:
      f.write('x')
    # 403 is not retried: PermissionDenied at once, in this process.
    gcs_emulator.inject(403, method='GET', path_regex=path[len('gs://'):])
    with self.assertRaisesRegex(tf.errors.PermissionDeniedError, '403'):
      with tf.io.gfile.GFile(path) as f:
        f.read()
    gcs_emulator.clear()
    # 429 is retried (TF's back-off is set when TF loads): in a subprocess
    # with env()'s short back-off, a lasting 429 is an error, a transient
    # one (2 answers) is retried through.
    gcs_emulator.inject(429, method='GET', path_regex=path[len('gs://'):])
    code = ('import sys, tensorflow as tf\n'
            'try:\n'
            f'  tf.io.gfile.GFile({path!r}).read()\n'
            'except tf.errors.OpError as e:\n'
            '  print(type(e).__name__, e.message.replace("\\n", " "))\n'
            '  sys.exit(3)\n')
    run = _in_fresh_process(code)
    self.assertEqual(run.returncode, 3, run.stderr[-2000:])
    self.assertRegex(run.stdout, r'response code 429')
    gcs_emulator.clear()
    gcs_emulator.inject(429, method='GET', path_regex=path[len('gs://'):],
                        times=2)
    with tf.io.gfile.GFile(path) as f:  # in-process: default back-off, 3 s
      self.assertEqual(f.read(), 'x')
    statuses = [r.status for r in gcs_emulator.requests()
                if r.method == 'GET' and path[len('gs://'):] in r.path]
    self.assertEqual(statuses[-3:], [429, 429, 206])  # a ranged read

  def test_delay_rule_delays_matching_requests_only(self):
    slow, fast = _fresh('slow'), _fresh('fast')
    for path in (slow, fast):
      with tf.io.gfile.GFile(path, 'w') as f:
        f.write('x')
    gcs_emulator.delay(1.5, method='GET', path_regex=slow[len('gs://'):],
                       times=1)
    started = time.monotonic()
    with tf.io.gfile.GFile(fast) as f:
      f.read()
    self.assertLess(time.monotonic() - started, 1.0)
    started = time.monotonic()
    with tf.io.gfile.GFile(slow) as f:
      f.read()
    self.assertGreaterEqual(time.monotonic() - started, 1.5)

  def test_connect_to_other_hosts_is_refused(self):
    emu = gcs_emulator.require_emulator()
    host, port = emu.front[len('http://'):].split(':')
    with socket_to(host, int(port)) as s:
      s.sendall(b'CONNECT example.com:443 HTTP/1.1\r\nHost: example.com\r\n\r\n')
      self.assertRegex(s.recv(200), rb'^HTTP/1\.[01] 403')


  def test_a_request_cut_short_is_not_stored(self):
    emu = gcs_emulator.require_emulator()
    host, port = emu.front[len('http://'):].split(':')
    name = f'cut-{uuid.uuid4().hex}'
    with socket_to(host, int(port)) as s:
      s.sendall(f'POST /upload/storage/v1/b/{emu.bucket}/o?uploadType=media&'
                f'name={name} HTTP/1.1\r\nHost: x\r\nContent-Length: 100'
                '\r\n\r\n0123456789'.encode())
    time.sleep(0.5)  # what the front would have forwarded, it has by now
    self.assertFalse(tf.io.gfile.exists(gcs_emulator.url(name)))


def socket_to(host, port):
  import socket  # pylint: disable=g-import-not-at-top
  return socket.create_connection((host, port), timeout=10)


if __name__ == '__main__':
  tf.test.main()
