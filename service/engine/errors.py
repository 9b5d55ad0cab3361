"""Errors raised by the scoring engines."""

from __future__ import annotations

from vigor_client.wire import ErrorCode

from ..errors import VigorServiceError


class UnsupportedModelError(VigorServiceError):
    """The batched engine cannot account for every scored parameter of this model.

    Raised at load time by `check_supported` (a scored parameter owned by a module type with no
    norm rule, or tied in a way no rule covers) and at scoring time when the model does something
    the rules cannot see (a scored module run twice in one forward pass). The message names the
    module type and the parameter, so the operator can switch to the loop engine or add a rule.
    """

    code = ErrorCode.UNSUPPORTED_MODEL
