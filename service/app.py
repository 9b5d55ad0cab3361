"""Builds the FastAPI application; all state hangs off app.state.runtime."""

from __future__ import annotations

from contextlib import asynccontextmanager

from fastapi import FastAPI

from . import __version__
from .api.admin_guard import AdminGuard
from .api.body_limit import BodyLimitMiddleware
from .api.errors import install_error_handlers
from .api.metrics_middleware import MetricsMiddleware
from .api.routes import admin, health, metrics, model, openrlhf, rewards, transfer
from .api.seams import ServingRuntime
from .models.loader import LoadedModel
from .runtime import Runtime
from .settings import Settings


def create_app(
    settings: Settings | None = None,
    *,
    loaded: LoadedModel | None = None,
    runtime: ServingRuntime | None = None,
) -> FastAPI:
    """`loaded` skips loading from settings.model (tests pass an in-memory model); `runtime`
    replaces the local one (the Ray Serve ingress passes one that scores on replicas)."""
    runtime = runtime or Runtime(settings or Settings())
    if not isinstance(runtime, ServingRuntime):  # fail at assembly, not on a first request
        raise TypeError(f"{type(runtime).__name__} does not satisfy api.seams.ServingRuntime")

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        runtime.start(loaded)
        yield
        await runtime.drain(runtime.settings.drain_timeout_s)
        await runtime.aclose()

    app = FastAPI(
        title="vigor-reward",
        version=__version__,
        summary="VIGOR gradient-norm rewards for RL post-training, as a service",
        lifespan=lifespan,
    )
    app.state.runtime = runtime
    install_error_handlers(app)
    app.add_middleware(
        BodyLimitMiddleware,
        max_bytes=runtime.settings.max_request_bytes,
        idle_timeout_s=runtime.settings.body_timeout_s,
        exempt=admin.streams_tensors,
    )
    # Outside the body limit: auth before any body is read.
    app.add_middleware(AdminGuard, settings=runtime.settings, api=app)
    app.add_middleware(MetricsMiddleware, metrics=runtime.metrics)
    routers = (health, model, rewards, openrlhf, admin, metrics)
    for router in (r.router for r in routers):
        app.include_router(router)
    # Mounted only where a transfer serves them; elsewhere each path answers 404 saying why.
    served = runtime.weights.transfer is not None
    app.include_router(transfer.router if served else transfer.not_served_router())
    return app
