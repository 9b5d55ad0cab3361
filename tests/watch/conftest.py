"""OpenRLHF's rollout of tests/api/test_openrlhf_executor.py, reused by the watcher's tests."""

from ..api.test_openrlhf_executor import rollout  # noqa: F401  (a fixture)
