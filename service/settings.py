"""The one settings object: command-line flags and VIGOR_* environment variables land here."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from vigor_client.schema import MAX_SKETCH_K
from vigor_client.wire import GROUP_HOLD_S

DEFAULT_MODEL = "default"
# Measured on the default model (benchmarks/results/engine_speed_cpu.md): 2-core CPU time per token
# is flat from 256 to 4096 tokens per micro-batch while memory grows linearly.
CPU_BATCH_TOKENS = 1024
CUDA_BATCH_TOKENS = 8192


def default_cache_dir() -> Path:
    """$VIGOR_CACHE_DIR, else ~/.cache/vigor-reward: tools beside the server find its cache."""
    return Path(os.environ.get("VIGOR_CACHE_DIR") or Path.home() / ".cache" / "vigor-reward")


class Settings(BaseSettings):
    """Every knob of the server. Each field is also read from VIGOR_<FIELD> (e.g. VIGOR_PORT)."""

    model_config = SettingsConfigDict(env_prefix="VIGOR_", extra="forbid")

    model: str = Field(
        DEFAULT_MODEL,
        description="Local Hugging Face model directory, or 'default' for the embedded "
        "SmolLM2-135M-Instruct.",
    )
    host: str = Field("127.0.0.1", description="Address to bind; 0.0.0.0 exposes the service.")
    port: int = Field(8000, ge=0, le=65535, description="TCP port (0 picks a free one).")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="Where the model runs.")
    dtype: Literal["auto", "float32", "bfloat16", "float16", "float64"] = Field(
        "auto", description="Model dtype; auto is bfloat16 on CUDA with bf16 support, else float32."
    )
    engine: Literal["batched", "loop"] = Field(
        "batched", description="Gradient-norm engine: one batched pass, or the per-completion loop."
    )
    max_batch_tokens: int | None = Field(
        None,
        gt=0,
        description="Hard token budget of one micro-batch (padded length × rows). Default: each "
        "micro-batch's measured memory stays at or below what the per-completion loop would hold "
        f"for the same request, at most {CPU_BATCH_TOKENS} tokens on CPU, {CUDA_BATCH_TOKENS} on "
        "CUDA (docs/engine.md, 'Micro-batch planning'). On CPU larger micro-batches are no "
        "faster and activation memory grows with them (8192 peaked at 13 GB RSS).",
    )
    gradient_checkpointing: bool = Field(
        False, description="Recompute activations in the backward pass (long sequences)."
    )
    estimator: Literal["exact", "sketch"] = Field(
        "exact",
        description="Gradient-norm estimator of requests that name none: exact, or the "
        "unbiased sketch of each Linear weight's norm (docs/estimator.md; batched engine only).",
    )
    sketch_k: int = Field(
        32,
        ge=1,
        le=MAX_SKETCH_K,
        description="With --estimator sketch: the projection size k (docs/estimator.md: 32 "
        "errs 5x less than the reference's bf16 sums at 1/5 of the exact Linear norm work).",
    )
    sketch_seed: int = Field(
        0, ge=0, lt=2**63, description="With --estimator sketch: the projections' seed."
    )
    cache_dir: Path = Field(
        default_factory=default_cache_dir,
        description="Where the default model's converted checkpoint is kept.",
    )
    admin_token: SecretStr | None = Field(
        None, description="Bearer token for /admin routes; without one they answer loopback only."
    )
    api_token: SecretStr | None = Field(
        None, description="Optional Bearer token required on scoring routes."
    )
    allowed_weights_dir: list[Path] = Field(
        default_factory=list,
        description="Directories weight reloads may read from (repeatable); empty allows any.",
    )
    admin_timeout_s: float = Field(
        300.0, gt=0, description="Longest an admin call may take before it answers 504."
    )
    upload_ttl_s: float = Field(
        300.0, gt=0, description="A staged weight push not touched for this long is dropped."
    )
    transfer_timeout_s: float = Field(
        120.0,
        gt=0,
        description="Weight transfer over torch.distributed: longest the server waits to join the "
        "trainer's group and for each broadcast bucket; past it the update is dropped and the "
        "group closed.",
    )
    watch_dir: Path | None = Field(
        None,
        description="Follow a trainer's checkpoints: load each new step directory under this one "
        "as weight_version = step (docs/weights.md). Must lie under --allowed-weights-dir when "
        "that is set.",
    )
    watch_pattern: str = Field(
        "openrlhf",
        description="Step directories under --watch-dir, a path with {step}, or a preset: "
        "openrlhf (global_step{step}_hf), verl (global_step_{step}/actor/huggingface), trl "
        "(checkpoint-{step}).",
    )
    watch_ready: Literal["complete", "tracker", "marker"] = Field(
        "complete",
        description="When a step directory may be loaded: complete (every safetensors file "
        "complete by its own header and size), tracker (also: the tracker file in --watch-dir "
        "names this step or a later one), marker (also: the marker file exists in the step "
        "directory).",
    )
    watch_ready_file: str | None = Field(
        None,
        description="The tracker file (in --watch-dir; default latest_checkpointed_iteration.txt) "
        "or marker file (in the step directory; default READY) of --watch-ready.",
    )
    watch_interval_s: float = Field(
        1.0, gt=0, description="How often --watch-dir is looked at between scoring requests."
    )
    watch_wait_s: float = Field(
        300.0,
        gt=0,
        description="A scoring request that arrives while a newer step directory is being written "
        "or loaded waits for it at most this long, then answers 504 checkpoint_pending. A step "
        "directory that stops growing for this long while incomplete is given up as failed.",
    )
    watch_load_existing: bool = Field(
        False,
        description="At start, load the newest complete step already in --watch-dir (a server "
        "restarted mid-run). Off: step directories present at start are an earlier run's "
        "leftovers and are skipped unless rewritten.",
    )
    watch_delete: bool = Field(
        False, description="Delete a step directory once it is loaded (not one that failed)."
    )
    expect_weight_updates: bool = Field(
        False,
        description="Warn (log, /metrics, /v1/model) when scoring requests keep arriving while "
        "the weight version does not move: the trainer is not updating the server. On with "
        "--watch-dir; set it when a callback pushes the weights.",
    )
    stale_after_requests: int = Field(
        256,
        gt=0,
        description="With updates expected: this many scoring requests at one version ...",
    )
    stale_after_s: float = Field(
        600.0, gt=0, description="... over at least this many seconds count as stale weights."
    )
    max_staged_bytes: int | None = Field(
        None,
        gt=0,
        description="Bound on weight bytes held before they are applied (staged pushes, reloads "
        "being read); default twice the model's size.",
    )
    max_queue: int = Field(
        256, gt=0, description="Scoring requests that may wait; one more answers 429."
    )
    batch_window_ms: float = Field(
        5.0, ge=0, description="How long the scheduler waits for more requests to coalesce."
    )
    max_request_bytes: int = Field(
        32 << 20, gt=0, description="Largest scoring request body (weight pushes excepted)."
    )
    max_groups: int = Field(1024, gt=0, description="Most groups in one scoring request.")
    max_completions_per_group: int = Field(512, gt=0, description="Most completions in one group.")
    max_request_tokens: int | None = Field(
        None,
        gt=0,
        description="Most tokens (prompt + completion, summed over its sequences) in one scoring "
        "request; more answer 413. Default 65536; on CPU eight of the longest sequences, at most "
        "65536 (reported in /v1/model).",
    )
    header_timeout_s: float = Field(
        10.0, gt=0, description="A connection whose request headers take longer is closed."
    )
    body_timeout_s: float = Field(
        30.0,
        gt=0,
        description="A request body that sends nothing for this long is answered 408 and its "
        "connection closed.",
    )
    max_sequence_tokens: int | None = Field(
        None,
        gt=0,
        description="Longest prompt + completion; cap: the model's context. Default: the context; "
        "on CPU what half the machine's memory holds at the model's activation cost per token "
        "(docs/reliability.md; reported in /v1/model).",
    )
    group_hold_s: float = Field(
        GROUP_HOLD_S,  # clients listen this long for a held sample's answer (wire.py)
        gt=0,
        description="How long samples of an incomplete group (group_size) are held before they "
        "answer 'group_incomplete'; below OpenRLHF's 180 s client timeout.",
    )
    max_group_hold_s: float = Field(
        600.0,
        gt=0,
        description="The longest hold_s a caller may ask for; more answers 422.",
    )
    max_held_samples: int = Field(
        65536, gt=0, description="Most samples held waiting for their groups; more answer 429."
    )
    max_held_bytes: int = Field(
        1 << 30,
        gt=0,
        description="Most bytes held for incomplete groups: the bodies of waiting requests and "
        "every held sample's tokens; more answer 429.",
    )
    max_held_samples_per_namespace: int = Field(
        16384,
        gt=0,
        description="Most held samples of one caller (bearer token and run key); more answer 429.",
    )
    max_held_bytes_per_namespace: int = Field(
        256 << 20,
        gt=0,
        description="Most held bytes of one caller (bearer token and run key); more answer 429.",
    )
    drain_timeout_s: float = Field(
        30.0, ge=0, description="On SIGTERM, how long in-flight requests may take to finish."
    )
    focal: bool = Field(
        False,
        description="Weight every score by the reference trainer's focal rule unless a request "
        "says otherwise (docs/variants.md): --focal-metric, --focal-lambda, --focal-target.",
    )
    focal_metric: Literal["entropy", "p_norm"] = Field(
        "entropy", description="With --focal: the base, mean token entropy or 1 - p_norm."
    )
    focal_lambda: float = Field(
        -0.5, ge=-4, le=4, description="With --focal: the exponent (the paper's -0.5)."
    )
    focal_target: float | None = Field(
        None,
        gt=0,
        description="With --focal: weight only completions with entropy below it (entropy; "
        "none: all) or p_norm above it (p_norm; none: 0.9).",
    )
    reward_spec: str | None = Field(
        None,
        description="A reward spec (a JSON file vigor-eval wrote, or its JSON text): requests "
        "may name it, and those that name no variant get it. Not with --focal.",
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field("info")
    exit_on_load_error: bool = Field(
        True,
        description="Exit non-zero with a one-line error when the model fails to load. "
        "--no-exit-on-load-error stays up instead, /ready answering 503 with the reason, for an "
        "orchestrator that reads it.",
    )
    ray: bool = Field(
        False,
        description="Serve as a Ray Serve application: one HTTP ingress in front of --replicas "
        "scoring replicas (docs/scaling.md; needs the ray extra).",
    )
    replicas: int = Field(1, ge=1, description="With --ray: the number of scoring replicas.")
    ray_address: str | None = Field(
        None,
        description="With --ray: the Ray cluster to join ('auto', or ray://host:10001); default "
        "starts a local one.",
    )
    replica_num_gpus: float = Field(0, ge=0, description="With --ray: GPUs per scoring replica.")
    replica_num_cpus: float = Field(1, ge=0, description="With --ray: CPUs per scoring replica.")

    @model_validator(mode="after")
    def _hold_within_ceiling(self) -> Settings:
        if self.group_hold_s > self.max_group_hold_s:
            raise ValueError(
                f"group_hold_s={self.group_hold_s:g} exceeds max_group_hold_s="
                f"{self.max_group_hold_s:g}"
            )
        return self

    @field_validator("admin_token", "api_token", "watch_dir", mode="before")
    @classmethod
    def _empty_token_is_none(cls, value):
        # `VIGOR_API_TOKEN=` in an env file means "no token", not "the empty token"; an empty
        # VIGOR_WATCH_DIR means no watcher, not the current directory.
        raw = value.get_secret_value() if isinstance(value, SecretStr) else value
        return None if raw is None or (isinstance(raw, str) and not raw.strip()) else value

    @property
    def expects_updates(self) -> bool:
        return self.expect_weight_updates or self.watch_dir is not None

    @model_validator(mode="after")
    def _watch_dir_is_allowed(self) -> Settings:
        from .watch.steps import StepPattern

        StepPattern(self.watch_pattern)  # a ValueError names what is wrong with it
        if self.watch_dir is None:
            return self
        real = Path(os.path.realpath(self.watch_dir))
        roots = [Path(os.path.realpath(a)) for a in self.allowed_weights_dir]
        if roots and not any(real == r or real.is_relative_to(r) for r in roots):
            shown = ", ".join(str(a) for a in self.allowed_weights_dir)
            raise ValueError(
                f"--watch-dir {self.watch_dir} is outside --allowed-weights-dir ({shown})"
            )
        self.watch_dir = real
        return self

    @model_validator(mode="after")
    def _variants_readable(self) -> Settings:
        self.reward_variants()  # a bad spec or focal option stops the start, naming the flag
        return self

    def reward_variants(self):
        """The default reward variant and the named ones, from --focal-* and --reward-spec."""
        from vigor_client.schema import Focal

        from .scoring.variants import variants_from

        focal = None
        if self.focal:
            try:
                focal = Focal.model_validate(
                    {"metric": self.focal_metric, "lambda": self.focal_lambda}
                    | ({} if self.focal_target is None else {"target": self.focal_target})
                )
            except ValueError as exc:
                raise ValueError(f"focal_target: {exc}") from None
        return variants_from(focal, self.reward_spec)

    @model_validator(mode="after")
    def _estimator_on_engine(self) -> Settings:
        if self.estimator == "sketch" and self.engine == "loop":
            raise ValueError("--estimator sketch needs --engine batched (the loop is exact only)")
        return self

    def default_estimator(self):
        """What a request that names no estimator gets, as the wire format spells it."""
        from vigor_client.schema import ExactEstimator, SketchEstimator

        if self.estimator == "sketch":
            return SketchEstimator(kind="sketch", k=self.sketch_k, seed=self.sketch_seed)
        return ExactEstimator(kind="exact")

    @property
    def batch_budget(self) -> Literal["loop", "tokens"]:
        """Micro-batches under the loop's memory (the default), or an explicit token budget."""
        return "loop" if self.max_batch_tokens is None else "tokens"

    def batch_tokens_on(self, device_type: str) -> int:
        """The micro-batch token budget (with the default policy, its ceiling) on a device of
        this type ("cpu" or "cuda")."""
        if self.max_batch_tokens is not None:
            return self.max_batch_tokens
        return CUDA_BATCH_TOKENS if device_type == "cuda" else CPU_BATCH_TOKENS
