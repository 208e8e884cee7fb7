"""Shared test configuration: hypothesis profiles.

`HYPOTHESIS_PROFILE=ci` (set by `.ci/run`) is derandomized so a red run reproduces,
with enough examples to matter; `dev` is quicker for local iteration.
"""
import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci", max_examples=150, derandomize=True, deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "dev", max_examples=40, deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))
