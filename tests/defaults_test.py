"""The command lines' --help and bigbigan_tf.defaults load no TensorFlow."""

import os
import subprocess
import sys

from absl.testing import absltest
from absl.testing import parameterized
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Packages whose import takes seconds; --help must not pay for them.
HEAVY = ('tensorflow', 'keras', 'jax')


def _imported_modules(args: list[str]) -> tuple[set[str], str]:
  """Top-level modules `python -X importtime ARGS` imports, and its stdout."""
  result = subprocess.run(
      [sys.executable, '-X', 'importtime'] + args, cwd=REPO,
      env=dict(os.environ, PYTHONPATH=REPO), capture_output=True, text=True,
      timeout=120, check=False)
  # absl exits with status 1 after printing --help.
  if result.returncode not in (0, 1) or 'Traceback' in result.stderr:
    raise AssertionError(f'{args} failed ({result.returncode}):\n'
                         f'{result.stderr[-3000:]}')
  modules = set()
  for line in result.stderr.splitlines():
    # "import time: self [us] | cumulative | imported package"
    if line.startswith('import time:') and line.count('|') == 2:
      name = line.rsplit('|', 1)[1].strip()
      modules.add(name.split('.')[0])
  return modules, result.stdout


@pytest.mark.slow  # each test runs a script in a subprocess
class DefaultsTest(parameterized.TestCase):

  @parameterized.parameters('train.py', 'export.py', 'eval/evaluate.py',
                            'eval/quick_probe.py')
  def test_help_imports_no_tensorflow(self, script):
    modules, out = _imported_modules([script, '--help'])
    self.assertIn('absl', modules)  # The parse did run.
    self.assertIn('--workdir', out)
    self.assertEmpty(set(HEAVY) & modules,
                     f'{script} --help imported {set(HEAVY) & modules}')

  def test_defaults_module_imports_no_tensorflow(self):
    modules, _ = _imported_modules(['-c', 'import bigbigan_tf.defaults'])
    self.assertIn('bigbigan_tf', modules)
    self.assertEmpty(set(HEAVY) & modules)

  def test_help_shows_the_library_defaults(self):
    from bigbigan_tf import defaults  # pylint: disable=g-import-not-at-top
    _, out = _imported_modules(['eval/evaluate.py', '--help'])
    self.assertIn(defaults.INCEPTION_HANDLE, out)
    self.assertIn(f"default: '{defaults.STANDING_STATS_BATCHES}'", out)


if __name__ == '__main__':
  absltest.main()
