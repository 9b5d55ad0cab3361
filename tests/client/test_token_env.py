"""Tokens from VIGOR_API_TOKEN / VIGOR_ADMIN_TOKEN when a client is given none, against a real
tiny server that requires both (the compose trainer gets its admin token only this way)."""

from __future__ import annotations

import asyncio

import pytest
import torch

from vigor_client import AsyncVigorClient, AuthenticationError, PermissionDeniedError, VigorClient
from vigor_client.integrations.trl import vigor_for_trl
from vigor_client.replicas import connect

from ..tiny_models import tiny_llama
from ..weights.helpers import GROUPS, perturbed, save_checkpoint, state, tiny_server

API, ADMIN = "api-from-env", "admin-from-env"


@pytest.fixture(scope="module")
def guarded():
    """A server started with explicit tokens, before any test puts them in the environment."""
    with tiny_server(api_token=API, admin_token=ADMIN) as srv:
        yield srv


@pytest.fixture
def tokens_in_env(monkeypatch):
    monkeypatch.setenv("VIGOR_API_TOKEN", API)
    monkeypatch.setenv("VIGOR_ADMIN_TOKEN", ADMIN)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    sd = perturbed(state(tiny_llama(tied=True, dtype=torch.float32)))
    return save_checkpoint(sd, tmp_path_factory.mktemp("env-ckpt"))


def test_without_tokens_or_environment_the_server_refuses(guarded, monkeypatch, checkpoint):
    monkeypatch.delenv("VIGOR_API_TOKEN", raising=False)
    monkeypatch.delenv("VIGOR_ADMIN_TOKEN", raising=False)
    with VigorClient(guarded.url) as client:
        with pytest.raises(AuthenticationError, match="bearer"):
            client.score(GROUPS)
        with pytest.raises(AuthenticationError, match="bearer"):
            client.reload_weights(checkpoint)


def test_sync_client_and_connect_read_both_tokens(guarded, tokens_in_env, checkpoint):
    for client in (VigorClient(guarded.url), connect(guarded.url)):
        with client:
            before = client.model_info().weight_version
            assert len(client.score(GROUPS).groups[0].rewards) == 3
            assert client.reload_weights(checkpoint).weight_version == before + 1


def test_async_client_reads_both_tokens(guarded, tokens_in_env, checkpoint):
    async def run():
        async with AsyncVigorClient(guarded.url) as client:
            before = (await client.model_info()).weight_version
            await client.score(GROUPS)
            return before, (await client.reload_weights(str(checkpoint))).weight_version

    before, after = asyncio.run(run())
    assert after == before + 1


def test_vigor_for_trl_reward_and_weight_sync_read_the_tokens(guarded, tokens_in_env, checkpoint):
    reward, sync = vigor_for_trl(guarded.url, num_generations=3)
    assert len(reward.client.score(GROUPS).groups[0].rewards) == 3
    before = sync.client.model_info().weight_version
    assert sync.client.reload_weights(checkpoint).weight_version == before + 1


def test_a_given_token_wins_and_an_empty_one_sends_none(guarded, tokens_in_env):
    with (
        VigorClient(guarded.url, api_token="wrong") as client,
        pytest.raises(PermissionDeniedError),
    ):
        client.score(GROUPS)
    with VigorClient(guarded.url, api_token="") as client, pytest.raises(AuthenticationError):
        client.score(GROUPS)
