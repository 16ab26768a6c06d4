"""A missing dependency is one clear message with its fix (tfgan_compat)."""

import unittest

import pytest

import testing


@pytest.mark.slow
class MissingDependencyTest(unittest.TestCase):

  def test_missing_pkg_resources_names_the_setuptools_pin(self):
    # As with setuptools >= 81 (a fresh Python 3.12 venv, or after installing
    # torch): tensorflow_hub's `import pkg_resources` fails.
    r = testing.run_python('''
        import json, sys
        sys.modules['pkg_resources'] = None  # makes its import fail
        from bigbigan_tf import tfgan_compat
        try:
          tfgan_compat.import_tfgan()
          out = {'raised': None}
        except ImportError as e:
          out = {'raised': type(e).__name__, 'message': str(e),
                 'name': e.name, 'chained': e.__cause__ is not None or
                                            e.__suppress_context__ is False}
        print(json.dumps(out))
    ''', timeout=300)
    self.assertEqual(r['raised'], 'MissingDependencyError', r)
    self.assertEqual(r['name'], 'pkg_resources', r)
    self.assertIn("pip install 'setuptools<81'", r['message'])
    self.assertNotIn('\n', r['message'])
    self.assertFalse(r['chained'], r)


if __name__ == '__main__':
  unittest.main()
