"""What this machine computes fast, and the 'auto' config values it settles.

`train.precision` and the speed switches (`model.fused_resampling`,
`model.fused_batch_norm`, `model.pointwise_matmul`, `model.tapped_filter_grad`,
`optim.fused_adam`) may be 'auto'. `resolve` turns
them into concrete values for the device the run has, and says why:

  precision     mixed_bfloat16 where the device computes bfloat16 natively
                (a TPU; an NVIDIA GPU of compute capability >= 8.0; an x86
                CPU with AMX-BF16 or AVX512_BF16), float32 elsewhere (where
                bfloat16 is emulated: several times slower than float32).
  speed tricks  chosen per device kind from measurements (docs/performance.md);
                on GPU and TPU, where none was measured, the plain Keras path.

Explicit values ('float32', True, False, ...) always win. Detection reads the
CPU's flags from /proc/cpuinfo and asks TensorFlow for GPUs and TPUs; the pure
functions (`cpu_isa`, `resolve_precision`, `resolve_switch`) take a `Device`, so
every branch is testable without that hardware.
"""

import dataclasses
import functools
import json
import os
from typing import Optional

import ml_collections

AUTO = 'auto'
# The config fields that may be 'auto', besides train.precision.
SWITCHES = ('model.fused_resampling', 'model.fused_batch_norm',
            'model.pointwise_matmul', 'model.tapped_filter_grad',
            'optim.fused_adam')
HARDWARE_FILENAME = 'hardware.json'

@dataclasses.dataclass(frozen=True)
class Device:
  """The device a run computes on.

  Attributes:
    kind: 'tpu', 'gpu' or 'cpu'.
    name: CPU model name, GPU name or TPU kind (for logs).
    cpu_flags: the CPU's feature flags (lower case, /proc/cpuinfo names).
    gpu_compute_capability: (major, minor) of the least capable GPU, or None.
    onednn_max_isa: the value of ONEDNN_MAX_CPU_ISA (or DNNL_MAX_CPU_ISA) when
      set: oneDNN, which runs TensorFlow's CPU convolutions and matmuls, then
      uses no instructions above it, so the 'auto' choices follow the cap.
  """
  kind: str
  name: str = ''
  cpu_flags: frozenset = frozenset()
  gpu_compute_capability: Optional[tuple] = None
  onednn_max_isa: str = ''

  @property
  def isa(self) -> str:
    """The CPU's ISA class as oneDNN may use it (the flags, under the cap)."""
    return capped_isa(cpu_isa(self.cpu_flags), self.onednn_max_isa)

  def describe(self) -> str:
    if self.kind == 'cpu':
      cap = (f', ONEDNN_MAX_CPU_ISA={self.onednn_max_isa}'
             if self.onednn_max_isa else '')
      return f'CPU {self.name or "(unknown model)"} [{self.isa}{cap}]'
    if self.kind == 'gpu':
      cc = self.gpu_compute_capability
      cc_text = f', compute capability {cc[0]}.{cc[1]}' if cc else ''
      return f'GPU {self.name}{cc_text}'
    return f'TPU {self.name}'.strip()


def cpu_isa(flags) -> str:
  """The best vector ISA class among `flags`: 'amx', 'avx512_bf16',
  'avx512', 'avx2' or 'baseline'."""
  flags = set(flags)
  if 'amx_bf16' in flags:
    return 'amx'
  if 'avx512_bf16' in flags:
    return 'avx512_bf16'
  if 'avx512f' in flags:
    return 'avx512'
  if 'avx2' in flags:
    return 'avx2'
  return 'baseline'


class HardwareError(ValueError):
  """A setting about the hardware (an environment variable) is invalid."""


# ISA classes from least to most capable.
ISA_ORDER = ('baseline', 'avx2', 'avx512', 'avx512_bf16', 'amx')


def onednn_isa_class(value: str) -> Optional[str]:
  """The ISA class a ONEDNN_MAX_CPU_ISA value allows at most (None: no cap).

  Raises:
    HardwareError: for a value oneDNN does not know, naming the known ones.
  """
  text = value.strip().upper()
  if text in ('', 'ALL', 'DEFAULT'):
    return None
  if 'AMX' in text:
    return 'amx'
  if text in ('AVX512_CORE_BF16', 'AVX512_CORE_FP16') or text.startswith(
      'AVX10'):
    return 'avx512_bf16'
  if text.startswith('AVX512'):
    return 'avx512'
  if text.startswith('AVX2'):
    return 'avx2'
  if text in ('SSE41', 'AVX'):
    return 'baseline'
  raise HardwareError(
      f'ONEDNN_MAX_CPU_ISA={value!r} is not an ISA oneDNN knows: use one of '
      'SSE41, AVX, AVX2, AVX2_VNNI, AVX512_CORE, AVX512_CORE_VNNI, '
      'AVX512_CORE_BF16, AVX512_CORE_AMX or ALL, or unset it.')


def capped_isa(isa: str, onednn_max_isa: str) -> str:
  """`isa` lowered to what ONEDNN_MAX_CPU_ISA=`onednn_max_isa` allows."""
  cap = onednn_isa_class(onednn_max_isa) if onednn_max_isa else None
  if cap is None:
    return isa
  return min(isa, cap, key=ISA_ORDER.index)


def isa_features(flags) -> dict:
  """{AVX2, AVX-512, AVX512_BF16, AMX-BF16: present?} for the bench/log."""
  flags = set(flags)
  return {'AVX2': 'avx2' in flags, 'AVX-512': 'avx512f' in flags,
          'AVX512_BF16': 'avx512_bf16' in flags,
          'AMX-BF16': 'amx_bf16' in flags}


def read_cpuinfo(path: str = '/proc/cpuinfo') -> tuple[str, frozenset]:
  """(model name, flags) of the first CPU in `path`; ('', {}) if unreadable."""
  name, flags = '', frozenset()
  try:
    with open(path) as f:
      for line in f:
        key, _, value = line.partition(':')
        key = key.strip()
        if key == 'model name' and not name:
          name = value.strip()
        elif key == 'flags' and not flags:
          flags = frozenset(value.split())
        if name and flags:
          break
  except OSError:
    pass
  return name, flags


@functools.lru_cache(maxsize=1)
def detect() -> Device:
  """The device TensorFlow will compute on here: TPU, else GPU, else CPU."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  if tf.config.list_logical_devices('TPU'):
    return Device(kind='tpu', name='')
  gpus = tf.config.list_physical_devices('GPU')
  if gpus:
    details = [tf.config.experimental.get_device_details(g) for g in gpus]
    ccs = [d.get('compute_capability') for d in details
           if d.get('compute_capability')]
    return Device(kind='gpu', name=details[0].get('device_name', 'GPU'),
                  gpu_compute_capability=min(ccs) if ccs else None)
  name, flags = read_cpuinfo()
  cap = (os.environ.get('ONEDNN_MAX_CPU_ISA')
         or os.environ.get('DNNL_MAX_CPU_ISA') or '')
  onednn_isa_class(cap)  # a bad value fails here, before any work
  return Device(kind='cpu', name=name, cpu_flags=flags,
                onednn_max_isa=cap.strip().upper())


def resolve_precision(value: str, device: Device) -> tuple[str, str]:
  """(precision, reason) for a `train.precision` value on `device`."""
  if value != AUTO:
    return value, 'set explicitly'
  if device.kind == 'tpu':
    return 'mixed_bfloat16', 'TPU: native bfloat16'
  if device.kind == 'gpu':
    cc = device.gpu_compute_capability
    if cc is not None and tuple(cc) >= (8, 0):
      return 'mixed_bfloat16', (f'GPU compute capability {cc[0]}.{cc[1]} '
                                '>= 8.0: native bfloat16')
    cc_text = f'{cc[0]}.{cc[1]}' if cc else 'unknown'
    return 'float32', (f'GPU compute capability {cc_text} < 8.0: no fast '
                       'bfloat16')
  isa = device.isa
  if isa in ('amx', 'avx512_bf16'):
    flag = 'AMX-BF16' if isa == 'amx' else 'AVX512_BF16'
    return 'mixed_bfloat16', f'CPU with native bfloat16: {flag}'
  capped = isa != cpu_isa(device.cpu_flags)
  cap_text = (f' (ONEDNN_MAX_CPU_ISA={device.onednn_max_isa})' if capped
              else '')
  return 'float32', ('CPU without native bfloat16: '
                     f'{isa.upper().replace("_", "-")}{cap_text}')


# Where 'auto' turns a speed switch on, by device class. Every True here was
# measured faster on that class (docs/performance.md); on GPU and TPU nothing
# was measured, so the plain Keras path runs there.
_SWITCH_ON = {
    'model.fused_resampling': {'amx', 'avx512_bf16', 'avx512', 'avx2'},
    'model.fused_batch_norm': {'amx', 'avx512_bf16', 'avx512', 'avx2'},
    # Measured faster on AMX and, in bf16, on the AVX512_BF16 CPU.
    'model.pointwise_matmul': {'amx', 'avx512_bf16', 'avx512', 'avx2'},
    # Measured faster on AMX; slower in both bf16 runs (the precision 'auto'
    # picks there) on the AVX512_BF16 CPU, so off there. AVX-512 and AVX2:
    # not measured, on as the float32 run suggested (docs/performance.md).
    'model.tapped_filter_grad': {'amx', 'avx512', 'avx2'},
    # Keras' own Adam update was faster on the AVX2-only CPU.
    'optim.fused_adam': {'amx', 'avx512_bf16', 'avx512'},
}


def _device_class(device: Device) -> str:
  return device.isa if device.kind == 'cpu' else device.kind


def parse_switch(value, field: str):
  """True / False / 'auto' from a bool or its spelling ('true', 'off', ...).

  Raises:
    ValueError: naming the field and the allowed values.
  """
  if isinstance(value, bool):
    return value
  text = str(value).strip().lower()
  if text == AUTO:
    return AUTO
  if text in ('true', 'on', '1', 'yes'):
    return True
  if text in ('false', 'off', '0', 'no'):
    return False
  raise ValueError(f'config.{field} = {value!r} is invalid: allowed values '
                   f"are 'auto', True, False. Set it with "
                   f'--config.{field}=auto|true|false.')


def resolve_switch(value, field: str,
                   device: Optional[Device] = None) -> tuple[bool, str]:
  """(on?, reason) for a speed switch `field` set to `value`."""
  parsed = parse_switch(value, field)
  if parsed != AUTO:
    return parsed, 'set explicitly'
  device = device or detect()
  cls = _device_class(device)
  on = cls in _SWITCH_ON[field]
  return on, f'auto on {cls}'


def switch(value, field: str) -> bool:
  """A speed switch's value on this machine (for code that builds layers)."""
  return resolve_switch(value, field)[0]


@dataclasses.dataclass(frozen=True)
class Resolution:
  """A config with every 'auto' settled, and why each value was chosen."""
  config: ml_collections.ConfigDict
  device: Device
  choices: dict  # field -> (value, reason)
  requested: dict  # the config as given, with its 'auto's

  def log_lines(self) -> list[str]:
    lines = [f'device: {self.device.describe()}']
    for field, (value, reason) in self.choices.items():
      requested = _get(self.requested, field)
      lines.append(f'{field} {requested} -> {value} ({reason})')
    return lines

  def record(self) -> dict:
    return {'device': self.device.describe(),
            'choices': {k: v for k, (v, _) in self.choices.items()},
            'reasons': {k: r for k, (_, r) in self.choices.items()}}


def requested_value(resolution: Resolution, field: str):
  """The value `field` had in the config before resolution."""
  return _get(resolution.requested, field)


def _get(d: dict, field: str):
  for part in field.split('.'):
    d = d[part]
  return d


def _set(d: dict, field: str, value) -> None:
  *parents, name = field.split('.')
  for part in parents:
    d = d[part]
  d[name] = value


def resolve(config: ml_collections.ConfigDict,
            device: Optional[Device] = None) -> Resolution:
  """Settles `train.precision` and the speed switches of `config`.

  Args:
    config: a full config; not modified.
    device: the device to resolve for (None = `detect()`).

  Returns:
    A Resolution whose `config` is an unlocked copy with concrete values.
  """
  device = device or detect()
  values = json.loads(config.to_json_best_effort())
  choices = {}
  precision, reason = resolve_precision(config.train.precision, device)
  choices['train.precision'] = (precision, reason)
  _set(values, 'train.precision', precision)
  for field in SWITCHES:
    on, why = resolve_switch(_get(values, field), field, device)
    choices[field] = (on, why)
    _set(values, field, on)
  requested = json.loads(config.to_json_best_effort())
  return Resolution(config=ml_collections.ConfigDict(values), device=device,
                    choices=choices, requested=requested)


def record_in_workdir(resolution: Resolution, workdir: str, step: int
                      ) -> Optional[str]:
  """Appends this run's resolution to W/hardware.json.

  Returns:
    A warning text when an earlier run of this workdir resolved differently
    (a resume on other hardware), else None.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  path = os.path.join(workdir, HARDWARE_FILENAME)
  runs = []
  if tf.io.gfile.exists(path):
    try:
      with tf.io.gfile.GFile(path) as f:
        runs = json.load(f).get('runs', [])
    except (ValueError, AttributeError):
      runs = []
  entry = {'start_step': int(step), **resolution.record()}
  warning = None
  if runs and runs[-1].get('choices') != entry['choices']:
    before = runs[-1]
    changed = [f'{k}: {before["choices"].get(k)!r} -> {v!r}'
               for k, v in entry['choices'].items()
               if before['choices'].get(k) != v]
    warning = (f'this workdir was trained up to here on '
               f'{before.get("device")} and resumes at step {step} on '
               f'{entry["device"]} with different settings: '
               + '; '.join(changed) + f' (recorded in {path}).')
  runs.append(entry)
  from bigbigan_tf import files  # pylint: disable=g-import-not-at-top
  files.write_json(path, {'runs': runs}, sort_keys=False)
  return warning
