"""The settings that make two evaluations' figures comparable, and their key.

An FID of 16 samples and one of 200 are different numbers for the same
checkpoint, and so are probes on different features or digit metrics with
another seed. Every result records `comparable(...)`, the settings its
figures depend on, and a short stable `fingerprint` of them keys its files
(W/eval/results_step{N}_{FP}.json, done_step{N}_{FP}.json) and the kept best
(W/best/best.json's 'fingerprint'): evaluations with other settings never
overwrite each other's files, and the best is chosen among results of one
fingerprint only.

Results written before the key existed (results_step{N}.json) form their own
group of unknown settings, fingerprint None.
"""

import hashlib
import json
from typing import Any, Dict, Optional, Sequence

# The keyword arguments of evaluate_lib.evaluate that change figures
# (batch_size does not; the metrics and Inception source are passed apart).
ARGUMENTS = ('num_samples', 'feature', 'seed', 'probe_epochs',
             'digit_classifier_epochs', 'prdc_k', 'standing_stats_batches')
UNKNOWN = 'unknown settings (results written before settings were keyed)'


def comparable(config, *, metrics: Sequence[str],
               inception_source: Optional[str], num_samples: int,
               feature: str, seed: int, probe_epochs: int,
               digit_classifier_epochs: int, prdc_k: int,
               standing_stats_batches: Optional[int]) -> Dict[str, Any]:
  """The settings an evaluation's figures depend on.

  Args:
    config: the run's config (its data: name, split, eval_split).
    metrics: the metrics actually planned (those that cannot run here
      excluded), in any order.
    inception_source: the Inception handle or path used, 'classifier_fn'
      for an injected classifier, None when no metric uses Inception (or it
      could not be loaded).
    num_samples, feature, seed, probe_epochs, digit_classifier_epochs,
    prdc_k, standing_stats_batches: evaluate_lib.evaluate's arguments
      (standing_stats_batches None for a module).

  Returns:
    A JSON-able dict; equal dicts mean comparable figures.
  """
  return {
      'metrics': sorted(set(metrics)),
      'num_samples': int(num_samples), 'feature': str(feature),
      'seed': int(seed), 'probe_epochs': int(probe_epochs),
      'digit_classifier_epochs': int(digit_classifier_epochs),
      'prdc_k': int(prdc_k),
      'standing_stats_batches': (None if standing_stats_batches is None
                                 else int(standing_stats_batches)),
      'inception': inception_source,
      'data': {'name': str(config.data.name),
               'split': str(config.data.split),
               'eval_split': str(config.data.eval_split)},
  }


def fingerprint(settings: Optional[Dict[str, Any]]) -> Optional[str]:
  """8 hex digits of the settings' canonical JSON; None for None (unknown)."""
  if settings is None:
    return None
  text = json.dumps(settings, sort_keys=True, separators=(',', ':'))
  return hashlib.sha256(text.encode()).hexdigest()[:8]


def describe(settings: Optional[Dict[str, Any]]) -> str:
  """A short human line: 'num_samples=16, metrics=..., ...' or UNKNOWN."""
  if settings is None:
    return UNKNOWN
  return (f"metrics={','.join(settings['metrics'])}, num_samples="
          f"{settings['num_samples']}, feature={settings['feature']}, "
          f"seed={settings['seed']}, inception={settings['inception']}")
