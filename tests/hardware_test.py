"""Tests for bigbigan_tf.hardware: 'auto' precision and speed switches."""

import json
import os
import tempfile
from unittest import mock

import tensorflow as tf

from bigbigan_tf import config_lib
from bigbigan_tf import hardware
from bigbigan_tf.configs import mnist
from bigbigan_tf.configs import tiny

Device = hardware.Device
# Flags as /proc/cpuinfo lists them on the three CPU kinds seen here.
_ZEN3 = frozenset('fpu sse sse2 avx fma avx2 bmi2'.split())
_ZEN5 = _ZEN3 | frozenset('avx512f avx512bw avx512_bf16 avx512_vnni'.split())
_SAPPHIRE = _ZEN5 | frozenset('amx_bf16 amx_tile amx_int8'.split())

_CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 7B13
flags\t\t: fpu sse2 avx fma avx2
processor\t: 1
model name\t: AMD EPYC 7B13
flags\t\t: fpu sse2 avx fma avx2
"""


class PrecisionTest(tf.test.TestCase):

  def test_auto_for_each_kind_of_device(self):
    cases = [
        (Device('tpu'), 'mixed_bfloat16', 'TPU'),
        (Device('gpu', 'A100', gpu_compute_capability=(8, 0)),
         'mixed_bfloat16', '8.0 >= 8.0'),
        (Device('gpu', 'H100', gpu_compute_capability=(9, 0)),
         'mixed_bfloat16', 'native'),
        (Device('gpu', 'V100', gpu_compute_capability=(7, 0)), 'float32',
         '7.0 < 8.0'),
        (Device('gpu', 'T4', gpu_compute_capability=(7, 5)), 'float32',
         'no fast bfloat16'),
        (Device('gpu', '?'), 'float32', 'unknown'),
        (Device('cpu', cpu_flags=_SAPPHIRE), 'mixed_bfloat16', 'AMX-BF16'),
        (Device('cpu', cpu_flags=_ZEN5), 'mixed_bfloat16', 'AVX512_BF16'),
        (Device('cpu', cpu_flags=_ZEN3), 'float32',
         'CPU without native bfloat16: AVX2'),
        (Device('cpu', cpu_flags=frozenset({'avx512f', 'avx2'})), 'float32',
         'AVX512'),
        (Device('cpu'), 'float32', 'BASELINE'),
    ]
    for device, want, reason in cases:
      with self.subTest(device=device):
        got, why = hardware.resolve_precision('auto', device)
        self.assertEqual(got, want)
        self.assertIn(reason, why)

  def test_explicit_values_win(self):
    for value in ('float32', 'mixed_bfloat16'):
      for device in (Device('tpu'), Device('cpu', cpu_flags=_ZEN3)):
        self.assertEqual(hardware.resolve_precision(value, device),
                         (value, 'set explicitly'))


class SwitchTest(tf.test.TestCase):

  def test_auto_by_device_class(self):
    zen3, zen5 = Device('cpu', cpu_flags=_ZEN3), Device('cpu', cpu_flags=_ZEN5)
    amx, gpu = Device('cpu', cpu_flags=_SAPPHIRE), Device('gpu', 'A100')
    want = {  # field: (AMX, Zen 5, Zen 3, GPU, TPU)
        'model.fused_resampling': (True, True, True, False, False),
        'model.fused_batch_norm': (True, True, True, False, False),
        'model.pointwise_matmul': (True, True, True, False, False),
        'model.tapped_filter_grad': (True, False, True, False, False),
        'optim.fused_adam': (True, True, False, False, False),
    }
    for field, expected in want.items():
      got = tuple(hardware.resolve_switch('auto', field, d)[0]
                  for d in (amx, zen5, zen3, gpu, Device('tpu')))
      self.assertEqual(got, expected, field)

  def test_spellings_and_errors(self):
    zen3 = Device('cpu', cpu_flags=_ZEN3)
    for value, want in ((True, True), ('False', False), ('on', True),
                        ('off', False), (' TRUE ', True)):
      self.assertEqual(
          hardware.resolve_switch(value, 'optim.fused_adam', zen3),
          (want, 'set explicitly'))
    with self.assertRaisesRegex(ValueError, r"optim.fused_adam = 'maybe'.*"
                                r"'auto', True, False"):
      hardware.parse_switch('maybe', 'optim.fused_adam')
    config = tiny.get_config()
    with config.unlocked():
      config.model.fused_batch_norm = 'sometimes'
    with self.assertRaisesRegex(config_lib.ConfigError,
                                'model.fused_batch_norm'):
      config_lib.validate(config)
    for field, value in (('pointwise_matmul', 'matmul'),
                         ('tapped_filter_grad', 'sometimes')):
      config = tiny.get_config()
      with config.unlocked():
        del config.model[field]  # the value may change type
        config.model[field] = value
      with self.assertRaisesRegex(config_lib.ConfigError,
                                  f'model.{field} = {value!r}.*'
                                  "'auto', True, False"):
        config_lib.validate(config)
    for field, value in (('pointwise_strided_max_pixels', -1),
                         ('tapped_filter_grad_max_pixels', 2.5),
                         ('fused_resampling_min_size', True)):
      config = tiny.get_config()
      with config.unlocked():
        del config.model[field]  # the value may change type
        config.model[field] = value
      with self.assertRaisesRegex(config_lib.ConfigError,
                                  f'model.{field} = {value!r}.*integer >= 0'):
        config_lib.validate(config)


class ResolveTest(tf.test.TestCase):

  def test_resolves_a_config_without_changing_it(self):
    config = mnist.get_config()
    self.assertEqual(config.train.precision, 'auto')
    res = hardware.resolve(config, Device('cpu', 'EPYC', cpu_flags=_ZEN3))
    self.assertEqual(res.config.train.precision, 'float32')
    self.assertIs(res.config.optim.fused_adam, False)
    self.assertIs(res.config.model.fused_resampling, True)
    self.assertEqual(config.train.precision, 'auto')  # the input is kept
    self.assertIn('train.precision auto -> float32 (CPU without native '
                  'bfloat16: AVX2)', res.log_lines())
    self.assertIn('device: CPU EPYC [avx2]', res.log_lines())
    res = hardware.resolve(config, Device('cpu', cpu_flags=_SAPPHIRE))
    self.assertEqual(res.config.train.precision, 'mixed_bfloat16')
    # tests run float32 on every machine.
    self.assertEqual(hardware.resolve(tiny.get_config()).config.train.precision,
                     'float32')

  def test_onednn_isa_cap_lowers_the_auto_choices(self):
    capped = Device('cpu', cpu_flags=_SAPPHIRE, onednn_max_isa='AVX2')
    self.assertEqual(capped.isa, 'avx2')
    precision, why = hardware.resolve_precision('auto', capped)
    self.assertEqual(precision, 'float32')
    self.assertIn('ONEDNN_MAX_CPU_ISA=AVX2', why)
    self.assertFalse(hardware.resolve_switch('auto', 'optim.fused_adam',
                                             capped)[0])
    self.assertIn('ONEDNN_MAX_CPU_ISA=AVX2', capped.describe())
    # A cap above what the CPU has changes nothing; so do ALL and DEFAULT.
    for cap in ('AVX512_CORE_AMX', 'ALL', 'default', ''):
      with self.subTest(cap=cap):
        self.assertEqual(Device('cpu', cpu_flags=_ZEN3,
                                onednn_max_isa=cap).isa, 'avx2')
    for cap, want in (('AVX512_CORE', 'avx512'), ('AVX512_CORE_VNNI', 'avx512'),
                      ('AVX512_CORE_BF16', 'avx512_bf16'), ('SSE41', 'baseline'),
                      ('AVX2_VNNI', 'avx2')):
      with self.subTest(cap=cap):
        self.assertEqual(hardware.capped_isa('amx', cap), want)
    with self.assertRaisesRegex(hardware.HardwareError,
                                'ONEDNN_MAX_CPU_ISA=.AVX3.*unset'):
      hardware.onednn_isa_class('AVX3')

  def test_detect_reads_the_onednn_cap(self):
    hardware.detect.cache_clear()
    try:
      with mock.patch.dict(os.environ, {'ONEDNN_MAX_CPU_ISA': 'sse41'}):
        device = hardware.detect()
      if device.kind == 'cpu':
        self.assertEqual(device.onednn_max_isa, 'SSE41')
        self.assertEqual(device.isa, 'baseline')
    finally:
      hardware.detect.cache_clear()

  def test_reads_cpuinfo(self):
    with tempfile.NamedTemporaryFile('w', suffix='cpuinfo') as f:
      f.write(_CPUINFO)
      f.flush()
      name, flags = hardware.read_cpuinfo(f.name)
    self.assertEqual(name, 'AMD EPYC 7B13')
    self.assertEqual(hardware.cpu_isa(flags), 'avx2')
    self.assertEqual(hardware.read_cpuinfo('/no/such/file'), ('', frozenset()))
    self.assertEqual(hardware.isa_features(_ZEN5),
                     {'AVX2': True, 'AVX-512': True, 'AVX512_BF16': True,
                      'AMX-BF16': False})

  def test_a_resume_on_other_hardware_is_recorded_and_reported(self):
    config = mnist.get_config()
    workdir = tempfile.mkdtemp()
    amx = hardware.resolve(config, Device('cpu', 'Xeon', cpu_flags=_SAPPHIRE))
    zen3 = hardware.resolve(config, Device('cpu', 'EPYC', cpu_flags=_ZEN3))
    self.assertIsNone(hardware.record_in_workdir(amx, workdir, 0))
    self.assertIsNone(hardware.record_in_workdir(amx, workdir, 500))
    warning = hardware.record_in_workdir(zen3, workdir, 1000)
    self.assertIn('resumes at step 1000', warning)
    self.assertIn("train.precision: 'mixed_bfloat16' -> 'float32'", warning)
    with open(os.path.join(workdir, hardware.HARDWARE_FILENAME)) as f:
      runs = json.load(f)['runs']
    self.assertEqual([r['start_step'] for r in runs], [0, 500, 1000])
    self.assertEqual(runs[-1]['choices']['train.precision'], 'float32')
    # The config in the workdir stays 'auto', so the resume is no conflict.
    self.assertEqual(config_lib.diff(config, mnist.get_config()), [])


if __name__ == '__main__':
  tf.test.main()
