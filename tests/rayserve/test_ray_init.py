"""The local Ray that `vigor-serve --ray` starts follows --host where Ray allows (issue 26, 12)."""

from __future__ import annotations

import pytest

from vigor_service.rayserve.app import ray_init_options
from vigor_service.rayserve.ledger import NAMESPACE
from vigor_service.settings import Settings


def test_on_loopback_no_dashboard_and_ray_picks_the_node_address():
    options = ray_init_options(Settings())
    assert options == {"address": None, "namespace": NAMESPACE, "include_dashboard": False}


@pytest.mark.parametrize("host", ["10.1.2.3", "192.0.2.7"])
def test_on_one_interface_the_node_address_is_that_interface(host):
    options = ray_init_options(Settings(host=host))
    assert options["_node_ip_address"] == host and options["include_dashboard"] is False


@pytest.mark.parametrize("host", ["0.0.0.0", "::"])
def test_on_every_interface_ray_picks_the_node_address(host):
    assert "_node_ip_address" not in ray_init_options(Settings(host=host))


def test_joining_a_cluster_leaves_its_settings_alone():
    options = ray_init_options(Settings(ray_address="auto"))
    assert options == {"address": "auto", "namespace": NAMESPACE}
