"""The wire format, defined once. The server imports these models; nothing else describes JSON.

Requests are validated strictly (wrong types are errors, not coerced), and every error message
the server derives from them names the group, the completion and the field.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictInt, model_validator


def _encodable(text: str) -> str:
    """JSON may escape lone surrogates (\\ud800) that no UTF-8 text, tokenizer or reply can hold."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(
            f"holds an unpaired UTF-16 surrogate {text[exc.start]!r} at character {exc.start}; "
            "send valid Unicode text"
        ) from None
    return text


def _path_text(text: str) -> str:
    if "\x00" in text:
        raise ValueError(f"holds a NUL character at character {text.index(chr(0))}")
    return text


# Every request string is strict (no coercion) and valid Unicode.
StrictStr = Annotated[str, Field(strict=True), AfterValidator(_encodable)]
PathStr = Annotated[StrictStr, AfterValidator(_path_text)]
Number = Annotated[float, Field(strict=True)]  # a JSON number: "2" is refused, not read as 2.0
SignalName = Literal[
    "logprob_sum", "logprob_mean", "entropy_mean", "self_certainty", "perplexity", "prob_mean"
]
Shaping = Literal["rank", "none"]
GroupId = StrictStr | StrictInt | None
TokenId = Annotated[StrictInt, Field(ge=0)]
# How long the server holds the samples of an incomplete group (group_size set) before it answers
# them with reward null, reason "group_incomplete". The server's default: --group-hold-s.
HoldSeconds = Annotated[Number, Field(gt=0, le=3600, allow_inf_nan=False)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


# --- reward variants (the reference trainer's options, and fitted combinations) --------------
FocalMetric = Literal["entropy", "p_norm"]
# The reference reads `kl_entropy_pnorm_target` with 0.9 as its fallback; under p_norm a target
# of None would weight nothing, so the service uses 0.9 when a request gives none.
DEFAULT_PNORM_TARGET = 0.9
# What a combination may weigh: the VIGOR score (focal-weighted when the spec has focal), a
# signal of the same pass at temperature 1, or the completion's token count.
FeatureName = Literal[
    "vigor", "logprob_sum", "logprob_mean", "entropy_mean", "self_certainty", "perplexity",
    "prob_mean", "num_tokens",
]  # fmt: skip
SpecName = Annotated[StrictStr, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}$")]


class Focal(_Strict):
    """The reference trainer's focal weighting (`kl_entropy_weighting_enabled`): before ranking,
    the raw score is multiplied by `base ** lambda`, where with metric `entropy` base is the mean
    token entropy + 1e-6 (only below `target`, if given; else 1), and with `p_norm` base is
    `max(1 - p_norm, 1e-6)` only where p_norm (the mean token probability) exceeds `target`.
    Both read the same pass's logits at temperature 1, as the reference does."""

    model_config = ConfigDict(extra="forbid", strict=True, populate_by_name=True)

    enabled: bool = Field(True, description="false: no weighting (turns a server default off).")
    metric: FocalMetric = "entropy"
    lam: Annotated[Number, Field(ge=-4, le=4, allow_inf_nan=False)] = Field(
        -0.5,
        alias="lambda",
        description="The exponent (reference `kl_entropy_focal_lambda`; the paper's −0.5). "
        "Negative lambda raises the score's magnitude for confident completions.",
    )
    target: Annotated[Number, Field(gt=0, allow_inf_nan=False)] | None = Field(
        None,
        description="entropy: weight only completions with entropy + 1e-6 below it (none: "
        f"all); p_norm: weight only those with p_norm above it (default {DEFAULT_PNORM_TARGET}).",
    )

    @model_validator(mode="after")
    def _target_fits_metric(self) -> Focal:
        if self.metric == "p_norm":
            if self.target is None:
                if "target" in self.model_fields_set:
                    raise ValueError(
                        "target: null under p_norm weights no completion (the reference then "
                        "leaves every score as it is); give a number in (0, 1) or omit it for "
                        f"{DEFAULT_PNORM_TARGET}"
                    )
                self.target = DEFAULT_PNORM_TARGET
            elif not self.target < 1:
                raise ValueError(
                    f"target: {self.target} under p_norm weights no completion (p_norm is at "
                    "most 1); give a number in (0, 1)"
                )
        return self

    @property
    def label(self) -> str:
        if not self.enabled:
            return "off"
        target = "" if self.target is None else f", target={self.target:g}"
        return f"focal({self.metric}, lambda={self.lam:g}{target})"


class RewardSpec(_Strict):
    """A reward variant, as `vigor-eval` writes it and the server applies it: the score that is
    ranked (or returned as is with shaping "none") is `sum(weights[f] * f)` over the features,
    or the (focal-weighted) VIGOR score alone when `weights` is absent."""

    name: SpecName
    focal: Focal | None = None
    weights: dict[FeatureName, Annotated[Number, Field(allow_inf_nan=False)]] | None = Field(
        None, description="A linear combination of same-pass features (vigor-eval fits it)."
    )
    about: dict[str, Any] | None = Field(
        None, description="Provenance (what it was fitted on, its held-out AUROC); not used."
    )

    @model_validator(mode="after")
    def _weights_not_empty(self) -> RewardSpec:
        if self.weights is not None and not any(w != 0 for w in self.weights.values()):
            raise ValueError("weights: give at least one non-zero weight (or omit weights)")
        return self

    @property
    def label(self) -> str:
        """Which variant produced a score, for responses, logs and reports."""
        parts = [self.name]
        if self.focal is not None and self.focal.enabled:
            parts.append(self.focal.label)
        if self.weights is not None:
            parts.append(" + ".join(f"{w:.4g}*{f}" for f, w in self.weights.items()))
        return " | ".join(parts)


PLAIN_SPEC_NAME = "vigor"  # the plain VIGOR score, no weighting: every server knows this name


class Message(_Strict):
    role: StrictStr
    content: StrictStr


PROMPT_FORMS = ("prompt", "messages", "prompt_ids")
COMPLETION_FORMS = ("completions", "completion_ids")


class Group(_Strict):
    """One prompt and the G completions sampled for it; rank shaping happens within a group.

    With `group_size`, this request carries only some of the group (trainers that ask one sample
    at a time): the server holds them under the key `id` until `group_size` completions of that
    key have arrived from any requests, scores and ranks the whole group, and answers each
    request with its own completions only.
    """

    id: GroupId = None
    prompt: StrictStr | None = None
    messages: list[Message] | None = None
    prompt_ids: list[TokenId] | None = None
    completions: list[StrictStr] | None = None
    completion_ids: list[list[TokenId]] | None = None
    group_size: Annotated[StrictInt, Field(ge=1)] | None = Field(
        None, description="Completions in the whole group, across requests; `id` is its key."
    )
    sample_ids: list[StrictStr] | None = Field(
        None,
        description="One per completion: its identity within the group, stable across retries "
        "(a sample sent again takes over its held slot instead of counting twice).",
    )
    hold_s: HoldSeconds | None = Field(
        None, description="Give up on an incomplete group after this long (default: the server's)."
    )

    @model_validator(mode="after")
    def _one_form_each(self) -> Group:
        prompts = [f for f in PROMPT_FORMS if getattr(self, f) is not None]
        if len(prompts) != 1:
            got = ", ".join(prompts) or "none"
            raise ValueError(f"give exactly one of {', '.join(PROMPT_FORMS)} (got {got})")
        comps = [f for f in COMPLETION_FORMS if getattr(self, f) is not None]
        if len(comps) != 1:
            got = ", ".join(comps) or "none"
            raise ValueError(f"give exactly one of {', '.join(COMPLETION_FORMS)} (got {got})")
        if len(self.completion_list) == 0:
            raise ValueError(f"{comps[0]} is empty: a group needs at least one completion")
        self._check_assembly(comps[0])
        return self

    def _check_assembly(self, completion_form: str) -> None:
        if self.group_size is None:
            extra = [f for f in ("sample_ids", "hold_s") if getattr(self, f) is not None]
            if extra:
                raise ValueError(f"{extra[0]} needs group_size (it only applies to a held group)")
            return
        if not isinstance(self.id, str) or not self.id:
            raise ValueError("a group with group_size needs a non-empty string id: the group key")
        if self.sample_ids is None:
            return
        n = len(self.completion_list)
        if len(self.sample_ids) != n:
            raise ValueError(
                f"sample_ids has {len(self.sample_ids)} items but {completion_form} has {n}"
            )
        seen: dict[str, int] = {}
        for k, sid in enumerate(self.sample_ids):
            if sid in seen:
                raise ValueError(f"sample_ids[{k}] repeats sample_ids[{seen[sid]}] ({sid!r})")
            seen[sid] = k

    @property
    def completion_list(self) -> list[Any]:
        return self.completions if self.completions is not None else (self.completion_ids or [])


# --- the gradient-norm estimator (docs/estimator.md) -------------------------------------------
# Projection sizes past this cost more than exact on every model the service targets.
MAX_SKETCH_K = 4096


class ExactEstimator(_Strict):
    """The exact per-sample gradient norm (the default)."""

    kind: Literal["exact"]


class SketchEstimator(_Strict):
    """An unbiased estimate of each Linear weight's squared gradient norm from seeded Gaussian
    projections of size k on both sides (LoGra-style); embeddings, norms and biases stay exact.
    Relative variance of a layer's ‖g‖² about 4/k; the same seed gives the same numbers."""

    kind: Literal["sketch"]
    k: Annotated[StrictInt, Field(ge=1, le=MAX_SKETCH_K)] = Field(
        description=f"Projection size, 1..{MAX_SKETCH_K}; larger is closer to exact and slower."
    )
    seed: Annotated[StrictInt, Field(ge=0, lt=2**63)] = Field(
        0, description="Selects the projections; compare scores only under the same seed."
    )


Estimator = Annotated[ExactEstimator | SketchEstimator, Field(discriminator="kind")]


class RewardsRequest(_Strict):
    groups: list[Group] = Field(min_length=1)
    shaping: Shaping = "rank"
    signals: list[SignalName] = Field(default_factory=list)
    temperature: Annotated[Number, Field(gt=0, allow_inf_nan=False)] = Field(
        1.0, description="Divides the logits for the extra signals only; never for the reward."
    )
    min_weight_version: StrictInt | None = Field(
        None, description="Refuse (409) unless the served weights are at least this version."
    )
    wait_s: Annotated[Number, Field(ge=0, le=600)] = Field(
        0.0, description="How long to wait for min_weight_version before answering 409."
    )
    deadline_s: Annotated[Number, Field(gt=0, le=3600)] | None = Field(
        None, description="Answer 504 without computing if scoring cannot start within this time."
    )
    hold_s: HoldSeconds | None = Field(
        None, description="Default hold_s for the groups with group_size that set none."
    )
    focal: Focal | None = Field(
        None, description="The reference's focal weighting (default: the server's --focal-*)."
    )
    reward_spec: SpecName | RewardSpec | None = Field(
        None,
        description="A reward variant: a name the server knows ('vigor', or its --reward-spec's) "
        "or the spec itself, as vigor-eval writes it. Not with focal.",
    )
    estimator: Estimator | None = Field(
        None,
        description='{"kind": "exact"} or {"kind": "sketch", "k": 128, "seed": 0}; default: the '
        "server's --estimator. The loop engine refuses a sketch (422).",
    )

    model_config = ConfigDict(extra="forbid", strict=False)

    @model_validator(mode="after")
    def _one_variant(self) -> RewardsRequest:
        if self.focal is not None and self.reward_spec is not None:
            raise ValueError(
                "give focal or reward_spec, not both (a spec carries its own focal weighting)"
            )
        return self


class GroupResult(BaseModel):
    id: GroupId = None
    rewards: list[float | None]
    scores: list[float | None]
    grad_norms: list[float | None]
    num_tokens: list[int]
    reasons: list[str | None] = Field(
        description="Why a score is null (e.g. 'empty_completion'); null where a score exists."
    )
    signals: dict[str, list[float | None]] | None = None
    signal_reasons: dict[str, list[str | None]] | None = Field(
        None,
        description="Why a signal is null (e.g. 'non_finite_signal' at an extreme temperature, "
        "'empty_completion'); null where the signal exists.",
    )


class RewardsResponse(BaseModel):
    model: str
    weight_version: int
    groups: list[GroupResult]
    reward_spec: RewardSpec | None = Field(
        None,
        description="The variant that produced `scores` and `rewards` (None from older servers).",
    )
    estimator: Estimator | None = Field(
        None, description="The estimator that produced `grad_norms` (None from older servers)."
    )


class WatchStatus(BaseModel):
    """The checkpoint watcher (`--watch-dir`): what it follows, loaded, waits for, and failed on."""

    dir: str
    pattern: str
    ready_rule: str
    loaded_step: int | None = Field(None, description="The last step directory loaded.")
    pending_step: int | None = Field(
        None,
        description="A newer step directory seen but not loaded yet (being written or loaded); "
        "scoring requests wait for it.",
    )
    pending_reason: str | None = Field(None, description="Why the pending step is not loaded yet.")
    loads: int = 0
    failures: int = 0
    last_error: str | None = Field(
        None,
        description="The last step directory that could not be loaded, and why; the "
        "weights served before it keep serving.",
    )
    skipped_leftovers: list[int] = Field(
        default_factory=list,
        description="Steps present at start and skipped as an earlier run's leftovers.",
    )


class StaleStatus(BaseModel):
    """The no-silent-base-weights guard: updates are expected and the version has not moved."""

    expects_updates: bool
    stale: bool
    requests_at_version: int = Field(description="Scoring calls since the version last moved.")
    seconds_at_version: float
    warning: str | None = None


class ModelInfo(BaseModel):
    model: str
    weight_version: int
    device: str
    dtype: str
    engine: str
    num_parameters: int
    num_scored_parameters: int
    adapter: str | None = None
    base_weights: bool | None = Field(
        None,
        description="True while the weights are those loaded at start (weight_version 0): pushed "
        "or reloaded weights do not survive a restart. None from servers that do not say.",
    )
    vocab_size: int
    max_sequence_length: int
    limits: dict[str, int] = Field(default_factory=dict)
    reward_spec: RewardSpec | None = Field(
        None, description="The variant a request that names none gets (None from older servers)."
    )
    reward_specs: list[str] = Field(
        default_factory=list, description="The variant names a request may give as reward_spec."
    )
    estimator: Estimator | None = Field(
        None, description="The estimator a request that names none gets (None from older servers)."
    )
    watch: WatchStatus | None = Field(
        None, description="The checkpoint watcher, when --watch-dir is set."
    )
    staleness: StaleStatus | None = Field(
        None, description="Whether the weights look stale while updates are expected."
    )
    micro_batches: dict[str, int | str | bool] | None = Field(
        None,
        description="The batched engine's micro-batch policy (policy: loop_memory or "
        "max_batch_tokens) and its numbers: max_batch_tokens, the measured bytes_per_token and "
        "logit_bytes_per_token, probe_tokens, measured, scored_bytes (docs/engine.md). None for "
        "the loop.",
    )


class OpenRLHFRequest(_Strict):
    """OpenRLHF's remote reward request (`--remote_rm_url http://host:port/get_reward`).

    `query[i]` is prompt + response decoded with special tokens; `prompts[i]` is the prompt text
    it starts with. Samples with identical prompts form one group. An empty batch is valid:
    OpenRLHF sends one when it shards fewer samples than it has reward URLs.
    """

    query: list[StrictStr]
    prompts: list[StrictStr]
    labels: list[Any] | None = Field(None, description="Ground-truth labels; VIGOR ignores them.")
    metas: list[Any] | None = Field(None, description="Sent by some OpenRLHF versions; ignored.")

    @model_validator(mode="after")
    def _aligned(self) -> OpenRLHFRequest:
        n = len(self.query)
        for name in ("prompts", "labels", "metas"):
            value = getattr(self, name)
            if value is not None and len(value) != n:
                raise ValueError(f"{name} has {len(value)} items but query has {n}")
        return self


class OpenRLHFResponse(BaseModel):
    """What OpenRLHF reads: `rewards` (advantages), `scores` (dynamic filtering, logging) and
    `extra_logs` (one float per sample, averaged into its training logs)."""

    rewards: list[float]
    scores: list[float]
    extra_logs: dict[str, list[float]]
    model: str | None = None
    weight_version: int | None = None


class ErrorDetail(BaseModel):
    code: str
    message: str
    current_weight_version: int | None = None


class ErrorResponse(BaseModel):
    error: ErrorDetail


# --- the weight plane (/admin) ---------------------------------------------------------------
WeightVersion = Annotated[StrictInt, Field(ge=0)]


class ReloadRequest(_Strict):
    """POST /admin/weights/reload: read a checkpoint the server can see on its own disk."""

    path: PathStr = Field(
        description="Absolute path of a Hugging Face checkpoint directory (model.safetensors, or "
        "sharded with model.safetensors.index.json) or of one .safetensors file."
    )
    version: WeightVersion | None = Field(
        None, description="The new weight version; must exceed the served one. Default: +1."
    )
    full: bool = Field(
        True, description="Every parameter must be present (false: replace only those given)."
    )
    allow_cast: bool = Field(
        False,
        description="Cast floating tensors to the served dtype (as start-up loading does); by "
        "default a dtype other than the served one is refused.",
    )


class CommitRequest(_Strict):
    """POST /admin/weights/uploads/{upload_id}/commit: apply everything staged, atomically."""

    version: WeightVersion | None = None
    full: bool = Field(False, description="Refuse unless every parameter was staged.")


class AdapterRequest(_Strict):
    """POST /admin/adapter (JSON form): a PEFT LoRA adapter directory on the server's disk."""

    path: PathStr = Field(description="Directory with adapter_config.json and its safetensors.")
    version: WeightVersion | None = None
    name: StrictStr | None = Field(None, description="Shown in /v1/model; default: the dir name.")
    allow_cast: bool = Field(
        True, description="Cast adapter tensors to the dtype peft gives the LoRA parameters."
    )


class WeightUpdate(BaseModel):
    """What an admin call changed: the served weights are now `weight_version`."""

    operation: Literal["reload", "push", "commit", "transfer", "adapter_load", "adapter_unload"]
    weight_version: int
    previous_version: int
    tensors: int = Field(description="Tensors written (a tied pair counts once).")
    bytes: int
    seconds: float = Field(description="Server time from the request to the swap.")
    adapter: str | None = None


class UploadStatus(BaseModel):
    """A bucketed push in progress: stage buckets, then commit (or abort)."""

    upload_id: str
    tensors: int
    bytes: int
    expires_in_s: float = Field(description="Dropped unless a bucket or commit arrives by then.")
    state: Literal["open", "aborted"] = "open"
