"""The Ray Serve application and `vigor-serve --ray`: one ingress, N scoring replicas, a ledger.

    vigor-serve --ray --replicas 2 --model DIR                  # a local Ray, started here
    vigor-serve --ray --ray-address auto --replicas 4 --replica-num-gpus 1

The ledger is created (fresh: a previous run's is killed) before the replicas, which join it.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading

from ..api.deps import is_loopback
from ..settings import Settings
from .ingress import IngressRuntime
from .ledger import NAMESPACE, WeightLedger, ledger_name
from .proxy_hook import proxy_env
from .replica import ScoringReplica

log = logging.getLogger(__name__)

APP_NAME = "vigor"
REPLICA = "ScoringReplica"


class VigorIngress:
    """The HTTP ingress: `create_app` over an IngressRuntime (built on the replica, not here)."""

    def __init__(self, settings: Settings, replicas, ledger: str) -> None:
        self.runtime = IngressRuntime(settings, replicas, ledger)

    def __serve_build_asgi_app__(self):
        from ..app import create_app

        return create_app(self.runtime.settings, runtime=self.runtime)


def build(settings: Settings, app_name: str = APP_NAME):
    """The application: `serve.run(build(settings))` once the ledger exists."""
    from ray import serve
    from ray.serve.config import RequestRouterConfig

    from .router import TokenCostRouter

    replica = serve.deployment(
        ScoringReplica,
        name=REPLICA,
        num_replicas=settings.replicas,
        ray_actor_options={
            "num_cpus": settings.replica_num_cpus,
            "num_gpus": settings.replica_num_gpus,
        },
        # The replica's scheduler queues and coalesces; Serve only has to keep it fed.
        max_ongoing_requests=settings.max_queue,
        request_router_config=RequestRouterConfig(request_router_class=TokenCostRouter),
        health_check_period_s=2,
        health_check_timeout_s=30,
    )
    ingress = serve.deployment(
        serve.ingress()(VigorIngress),
        name="VigorIngress",
        num_replicas=1,  # one place where groups are assembled
        ray_actor_options={"num_cpus": 0},
        max_ongoing_requests=100_000,  # held samples wait here by design
    )
    ledger = ledger_name(app_name)
    return ingress.bind(settings, replica.bind(settings, ledger), ledger)


def start_ledger(app_name: str = APP_NAME):
    """A fresh named, detached ledger (it outlives the ingress and any replica)."""
    import ray

    name = ledger_name(app_name)
    with contextlib.suppress(ValueError):  # none left from an earlier run
        ray.kill(ray.get_actor(name, namespace=NAMESPACE))
    return (
        ray.remote(WeightLedger)
        .options(name=name, namespace=NAMESPACE, lifetime="detached", num_cpus=0)
        .remote()
    )


def ray_init_options(settings: Settings) -> dict:
    """`ray.init` arguments. A Ray started here follows --host where Ray lets it: no dashboard,
    and the node address is --host when that is one interface's address. Ray 2.60 turns a
    loopback node address into the machine's own and binds its GCS, raylet and worker gRPC
    ports on every interface whatever the node address: docs/scaling.md lists what stays open.
    """
    options: dict = {"address": settings.ray_address, "namespace": NAMESPACE}
    if settings.ray_address is not None:
        return options  # joining a cluster: its operator chose how it listens
    options["include_dashboard"] = False
    host = settings.host
    specific = host not in ("0.0.0.0", "::", "") and not is_loopback(host)
    if specific:
        options["_node_ip_address"] = host
    return options


def launch(settings: Settings, app_name: str = APP_NAME):
    """Start (or join) Ray, the ledger and the application; returns the app's handle."""
    import ray
    from ray import serve

    if not ray.is_initialized():
        ray.init(**ray_init_options(settings))
    ledger = start_ledger(app_name)
    ray.get(ledger.state.remote())  # up before any replica looks for it
    serve.start(
        http_options={"host": settings.host, "port": settings.port},
        # The proxy inherits these: they bound its header time (proxy_hook.py).
        controller_options={"runtime_env": {"env_vars": proxy_env(settings.header_timeout_s)}},
    )
    return serve.run(
        build(settings, app_name),
        name=app_name,
        route_prefix="/",
        blocking=False,
        external_scaler_enabled=True,  # lets `scale` add replicas without replacing them
    )


def scale(replicas: int, app_name: str = APP_NAME) -> None:
    """Set the number of scoring replicas in place: new ones join at the committed version.

    A second serve.run with another num_replicas would replace every replica (measured with ray
    2.60.0); the controller's external-scaler call only adds or removes. It is not exported by
    ray.serve, hence the private client.
    """
    import ray
    from ray.serve._private.common import DeploymentID
    from ray.serve.context import _get_global_client

    controller = _get_global_client()._controller
    ray.get(
        controller.update_deployment_replicas.remote(
            DeploymentID(name=REPLICA, app_name=app_name), replicas
        )
    )


def shutdown(app_name: str = APP_NAME) -> None:
    import ray
    from ray import serve

    serve.delete(app_name)
    with contextlib.suppress(ValueError):
        ray.kill(ray.get_actor(ledger_name(app_name), namespace=NAMESPACE))


def serve_on_ray(settings: Settings) -> int:
    """`vigor-serve --ray`: serve until SIGTERM or SIGINT, then take the application down."""
    import ray

    from ..serve import StartError

    try:
        launch(settings)
    except RuntimeError as exc:  # Serve's DEPLOY_FAILED: a replica or the ingress did not start
        with contextlib.suppress(Exception):
            shutdown()
        ray.shutdown()
        first = str(exc).strip().splitlines()[0]
        raise StartError(f"the Ray Serve application did not start: {first}") from None
    log.info(
        "serving on Ray at http://%s:%d with %d scoring replicas",
        settings.host, settings.port, settings.replicas,
    )  # fmt: skip
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    shutdown()
    ray.shutdown()
    return 0
