"""Bad input of every kind answers a 4xx naming what is wrong, never a 500: invalid Unicode in any
text field or as raw bytes, unparseable bodies, wrong content types, coerced numbers, and weight
plane paths and files (NUL, surrogates, nested headers, files linked out of the allowed dirs)."""

from __future__ import annotations

import gzip
import json
import struct

import httpx
import pytest

from ..weights.helpers import admin, tiny_server

G = {"prompt_ids": [1, 2], "completion_ids": [[3]]}
S = "\\ud800"  # a lone surrogate, as JSON escapes it
JSON = {"Content-Type": "application/json"}


@pytest.fixture(scope="module")
def srv():
    with tiny_server() as server:
        yield server


def text_body(field: str) -> str:
    """A group with a lone surrogate in one text field (raw JSON: json.dumps would refuse it)."""
    c = '"completion_ids": [[2]]'
    groups = {
        "id": f'"id": "{S}", "prompt_ids": [1], {c}',
        "prompt": f'"prompt": "{S}", {c}',
        "messages": f'"messages": [{{"role": "user", "content": "{S}"}}], {c}',
        "role": f'"messages": [{{"role": "{S}", "content": "x"}}], {c}',
        "completions": f'"prompt_ids": [1], "completions": ["ok", "{S}"]',
        "sample_ids": f'"id": "g", "group_size": 2, "sample_ids": ["{S}"], "prompt_ids": [1], {c}',
    }
    return f'{{"groups": [{{{groups[field]}}}]}}'


@pytest.mark.parametrize("field", ["id", "prompt", "messages", "role", "completions", "sample_ids"])
def test_a_lone_surrogate_in_any_text_field_is_422_naming_it(srv, field):
    r = httpx.post(srv.url + "/v1/rewards", content=text_body(field), headers=JSON, timeout=30)
    assert r.status_code == 422, r.text
    assert "unpaired UTF-16 surrogate" in r.text and "groups[0]" in r.text


@pytest.mark.parametrize("field", ["query", "prompts"])
def test_a_lone_surrogate_on_get_reward_is_422(srv, field):
    body = {"query": '["ab"]', "prompts": '["a"]'}
    body[field] = f'["{S}"]'
    raw = f'{{"query": {body["query"]}, "prompts": {body["prompts"]}}}'
    r = httpx.post(srv.url + "/get_reward", content=raw, headers=JSON, timeout=30)
    assert r.status_code == 422 and f"{field}[0]" in r.text and "surrogate" in r.text, r.text


GOOD = json.dumps({"groups": [G]}).encode()
BAD_BODIES = {
    "invalid UTF-8": (b'{"groups": [{"id": "\xff\xfe"}]}', JSON, 400, "not valid UTF-8"),
    "gzip bytes": (gzip.compress(GOOD), JSON, 400, "gzip"),
    "gzip encoding": (gzip.compress(GOOD), {**JSON, "Content-Encoding": "gzip"}, 415, "gzip"),
    "5,000-digit integer": (b'{"groups": [{"prompt_ids": [1' + b"0" * 5000 + b"]}]}",
                            JSON, 400, "integer too long"),
    "deep JSON": (b"[" * 100_000 + b"]" * 100_000, JSON, 400, "too deeply"),
    "no Content-Type": (GOOD, {}, 415, "no Content-Type"),
    "text/plain": (GOOD, {"Content-Type": "text/plain"}, 415, "text/plain"),
    "syntax error": (b'{"groups": [', JSON, 422, "not valid JSON"),
}  # fmt: skip


@pytest.mark.parametrize("route", ["/v1/rewards", "/get_reward", "/admin/weights/reload"])
@pytest.mark.parametrize("case", list(BAD_BODIES))
def test_unreadable_bodies_are_4xx_saying_why(srv, route, case):
    body, headers, status, phrase = BAD_BODIES[case]
    r = httpx.post(srv.url + route, content=body, headers=headers, timeout=60)
    assert r.status_code == status, r.text
    assert phrase in r.json()["error"]["message"]


@pytest.mark.parametrize("field", ["temperature", "wait_s", "deadline_s", "min_weight_version"])
def test_numbers_given_as_strings_are_refused_not_coerced(srv, field):
    body = {"groups": [G], field: "2"}
    r = httpx.post(srv.url + "/v1/rewards", json=body, timeout=30)
    assert r.status_code == 422 and field in r.text, r.text


@pytest.mark.parametrize("route", ["/admin/weights/reload", "/admin/adapter"])
@pytest.mark.parametrize(
    ("path", "phrase"), [('"/tmp/a\\u0000b"', "NUL"), (f'"/tmp/{S}"', "surrogate")]
)
def test_weight_paths_with_nul_or_surrogates_are_422(srv, route, path, phrase):
    r = admin(srv.url, "POST", route, content=f'{{"path": {path}}}', headers=dict(JSON))
    # /admin/adapter parses with pydantic's own JSON reader, which names the bad escape itself
    said = phrase in r.text or (route == "/admin/adapter" and "hex escape" in r.text)
    assert r.status_code == 422 and said, r.text


def test_a_deeply_nested_safetensors_header_is_422(srv):
    header = b"[" * 100_000 + b"]" * 100_000
    body = struct.pack("<Q", len(header)) + header
    headers = {"Content-Type": "application/octet-stream"}
    r = admin(srv.url, "POST", "/admin/weights/push", content=body, headers=headers)
    assert r.status_code == 422 and "too deeply" in r.text, r.text


def test_files_linked_out_of_the_allowed_dir_are_refused_unread(tmp_path):
    allowed, outside = tmp_path / "allowed", tmp_path / "outside"
    allowed.mkdir()
    outside.mkdir()
    secret = outside / "secret.json"
    secret.write_text(json.dumps({"weight_map": {"x": "TOP-SECRET-CONTENT"}}))
    ckpt = allowed / "ckpt"
    ckpt.mkdir()
    (ckpt / "model.safetensors.index.json").symlink_to(secret)
    adapter = allowed / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").symlink_to(secret)
    (adapter / "adapter_model.safetensors").write_bytes(b"")
    with tiny_server(allowed_weights_dir=[allowed]) as server:
        for route, path in (("/admin/weights/reload", ckpt), ("/admin/adapter", adapter)):
            r = admin(server.url, "POST", route, json={"path": str(path)})
            assert r.status_code == 403, r.text
            assert "TOP-SECRET" not in r.text and "outside the allowed" in r.text
