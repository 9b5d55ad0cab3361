"""A real local Ray (2 CPUs) running the application, and a plain `vigor-serve` beside it.

Both serve the tiny chat model in float64, so the same groups score to the same values on both.
"""

from __future__ import annotations

from contextlib import contextmanager

import httpx
import pytest

from ..servers import ProcessServer, free_port, wait_ready

ray = pytest.importorskip("ray", reason="the ray extra is not installed")


@pytest.fixture(scope="module")
def weights_dir(tmp_path_factory):
    """Where both servers may reload checkpoints and adapters from."""
    return tmp_path_factory.mktemp("weights")


@pytest.fixture(scope="module")
def plain_server(tiny_chat_model_dir, weights_dir, tmp_path_factory):
    """Its own plain server: these tests push weights to it."""
    server = ProcessServer(
        "--model", str(tiny_chat_model_dir), "--dtype", "float64",
        "--allowed-weights-dir", str(weights_dir),
    )  # fmt: skip
    server.start(tmp_path_factory.mktemp("plain") / "server.log")
    yield server
    server.stop()


@contextmanager
def running_ray_app(model_dir, weights_dir, **settings_fields):
    """The application on a fresh local Ray (2 replicas of half a CPU each); yields its URL."""
    from vigor_service.rayserve import app
    from vigor_service.settings import Settings

    settings = Settings(
        model=str(model_dir),
        dtype="float64",
        port=free_port(),
        ray=True,
        replicas=2,
        replica_num_cpus=0.5,
        admin_timeout_s=120,
        allowed_weights_dir=[weights_dir],
        **settings_fields,
    )
    ray.init(num_cpus=2, include_dashboard=False, namespace="vigor", log_to_driver=False)
    try:
        app.launch(settings)
        url = f"http://127.0.0.1:{settings.port}"
        wait_ready(url, 300)
        yield url
    finally:
        app.shutdown()
        ray.shutdown()


@pytest.fixture(scope="module")
def ray_app(tiny_chat_model_dir, weights_dir):
    with running_ray_app(tiny_chat_model_dir, weights_dir) as url:
        yield url


@pytest.fixture(scope="module")
def ledger(ray_app):
    from vigor_service.rayserve.app import APP_NAME
    from vigor_service.rayserve.ledger import NAMESPACE, ledger_name

    return ray.get_actor(ledger_name(APP_NAME), namespace=NAMESPACE)


def score(url: str, groups: list[dict], **extra) -> httpx.Response:
    return httpx.post(url + "/v1/rewards", json={"groups": groups, **extra}, timeout=120)
