"""What came back, turned into a wire model or the typed error it stands for; sends nothing.

An answer becomes its model (`parse_response`) or its `VigorServerError` (`error_for`, by the
code table in errors.py); a failure of httpx's transport becomes a `VigorConnectionError`.
"""

from __future__ import annotations

import email.utils
import json
import math
import time
from typing import TypeVar

import httpx
from pydantic import BaseModel, ValidationError

from .errors import (
    VigorConnectionError,
    VigorProtocolError,
    VigorServerError,
    VigorTimeoutError,
    error_class,
)
from .schema import Group, GroupResult, RewardSpec, RewardsRequest, RewardsResponse
from .wire import ErrorCode

T = TypeVar("T", bound=BaseModel)


def parse_response(response: httpx.Response, model: type[T]) -> T:
    """The success body as `model`; an error answer raises its typed error."""
    error = error_for(response)
    if error is not None:
        raise error
    try:
        return model.model_validate_json(response.content)
    except ValidationError as exc:
        raise VigorProtocolError(
            f"{response.request.url} answered {response.status_code} with a body that is not a "
            f"{model.__name__}: {exc}"
        ) from exc


def check_rewards(request: RewardsRequest, answer: RewardsResponse, url: str) -> RewardsResponse:
    """`answer` when it answers `request`, else a `VigorProtocolError` naming what is wrong.

    One group per group, one value per completion in every list, each value finite and within
    what VIGOR produces (scores ≤ 0 unless the variant is a fitted combination, gradient norms
    ≥ 0, rank rewards in [−1, 1]), a null only
    with its reason, and weights at least the version required. A trainer that took a broken or
    lying peer's answer would train on noise, so nothing here fixes an answer up.
    """
    problems = []
    # A focal weight is positive, so a focal score stays ≤ 0; a combination's can be anything.
    spec = request.reward_spec if isinstance(request.reward_spec, RewardSpec) else None
    spec = spec or answer.reward_spec
    top = math.inf if spec is not None and spec.weights is not None else 0.0
    if len(answer.groups) != len(request.groups):
        problems.append(f"{len(answer.groups)} groups for the {len(request.groups)} sent")
    for i, (group, result) in enumerate(zip(request.groups, answer.groups, strict=False)):
        problems += _group_problems(f"groups[{i}]", group, result, request, top)
    if request.estimator is not None and answer.estimator != request.estimator:
        # A sketch asked for and exact numbers answered (or the reverse) rank differently.
        shown = None if answer.estimator is None else answer.estimator.model_dump()
        problems.append(f"estimator {shown} is not the {request.estimator.model_dump()} asked for")
    need = request.min_weight_version
    scored = any(r is not None for g in answer.groups for r in [*g.rewards, *g.scores])
    if need is not None and scored and answer.weight_version < need:
        # Only a scored answer claims a version: a held group that never completed has none.
        problems.append(f"weight_version {answer.weight_version} is below the required {need}")
    if problems:
        shown = "; ".join(problems[:10])
        more = f" (and {len(problems) - 10} more)" if len(problems) > 10 else ""
        raise VigorProtocolError(
            f"{url} answered rewards that do not answer the request: {shown}{more}"
        )
    return answer


def _group_problems(
    where: str, group: Group, result: GroupResult, request: RewardsRequest, top: float = 0.0
) -> list[str]:
    n = len(group.completion_list)
    if group.id is not None and result.id != group.id:
        return [f"{where}.id is {result.id!r}, not the {group.id!r} sent"]
    lists: dict[str, list | None] = {
        "rewards": result.rewards, "scores": result.scores, "grad_norms": result.grad_norms,
        "num_tokens": result.num_tokens, "reasons": result.reasons,
    }  # fmt: skip
    for name in request.signals:
        lists[f"signals.{name}"] = (result.signals or {}).get(name)
    for name, values in (result.signal_reasons or {}).items():
        lists[f"signal_reasons.{name}"] = values
    wrong = [
        f"{where}.{name} has {'no' if got is None else len(got)} values for {n} completions"
        for name, got in lists.items()
        if got is None or len(got) != n
    ]
    if wrong:
        return wrong
    problems = []
    low, high = (-1.0, 1.0) if request.shaping == "rank" else (-math.inf, top)
    for j in range(n):
        why = result.reasons[j]
        problems += _value(f"{where}.rewards[{j}]", result.rewards[j], why, low, high)
        problems += _value(f"{where}.scores[{j}]", result.scores[j], why, -math.inf, top)
        problems += _value(f"{where}.grad_norms[{j}]", result.grad_norms[j], why, 0.0, math.inf)
        if result.num_tokens[j] < 0:
            problems.append(f"{where}.num_tokens[{j}] is {result.num_tokens[j]}")
        for name in request.signals:
            value = result.signals[name][j]  # type: ignore[index]
            why = (result.signal_reasons or {}).get(name, [None] * n)[j]
            problems += _value(f"{where}.signals.{name}[{j}]", value, why, -math.inf, math.inf)
    return problems


def _value(where: str, value: float | None, reason: str | None, low: float, high: float) -> list:
    """What is wrong with one value: a null needs its reason; a number is finite, in range."""
    if value is None:
        return [] if reason else [f"{where} is null without a reason"]
    if not math.isfinite(value):
        return [f"{where} is {value}"]
    if not low <= value <= high:
        return [f"{where} is {value:g}, outside [{low:g}, {high:g}]"]
    return []


def error_for(response: httpx.Response) -> VigorServerError | None:
    """The typed error an answer stands for, or None for a success."""
    if response.status_code < 400:
        return None
    code, message, version = ErrorCode.HTTP_ERROR.value, response.text[:500], None
    try:
        detail = json.loads(response.content)["error"]
        code, message = detail["code"], detail["message"]
        version = detail.get("current_weight_version")
    except (ValueError, KeyError, TypeError):
        pass
    return error_class(response.status_code, code)(
        response.status_code,
        code,
        message,
        url=str(response.request.url),
        current_weight_version=version,
        retry_after=parse_retry_after(response.headers.get("Retry-After")),
    )


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Retry-After as seconds from now: delay-seconds or an HTTP-date (RFC 9110 §10.2.3);
    None when absent or unreadable (the caller then backs off on its own)."""
    if value is None or not value.strip():
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    return max(0.0, seconds) if math.isfinite(seconds) else None


# The connection was never made: the server cannot have seen the request.
NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
# Failures a repeat may get past: the network, or a peer that went away mid-exchange.
TRANSIENT = (httpx.NetworkError, httpx.TimeoutException, httpx.RemoteProtocolError)


def translate_transport_error(exc: httpx.HTTPError, url: str) -> VigorConnectionError:
    """Map httpx's transport errors onto ours at the boundary; callers `raise ... from exc`."""
    facts = {
        "request_sent": not isinstance(exc, NOT_SENT),
        "transient": isinstance(exc, TRANSIENT),
    }
    what = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, httpx.TimeoutException):
        return VigorTimeoutError(f"no answer from {url} in time ({what})", **facts)
    return VigorConnectionError(f"cannot reach {url} ({what})", **facts)
