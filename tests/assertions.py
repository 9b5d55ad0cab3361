"""Comparisons for score lists that may hold None (no score) entries."""

import pytest


def assert_close(got, want, rel):
    assert len(got) == len(want), (got, want)
    for g, w in zip(got, want, strict=True):
        if w is None:
            assert g is None, (got, want)
        else:
            assert g == pytest.approx(w, rel=rel), (got, want)
