import contextlib
import socket
import subprocess
import sys
import time

import httpx
import pytest
import torch

from vigor_service.cli import build_parser, main, settings_from_args
from vigor_service.settings import Settings

from .servers import free_port


def test_every_setting_has_a_flag():
    flags = {a.dest for a in build_parser()._actions}
    assert set(Settings.model_fields) <= flags


def test_flag_beats_environment_beats_default(monkeypatch):
    monkeypatch.setenv("VIGOR_PORT", "9100")
    monkeypatch.setenv("VIGOR_DTYPE", "bfloat16")
    settings, _ = settings_from_args(["--port", "9200"])
    assert settings.port == 9200 and settings.dtype == "bfloat16"
    assert settings.host == "127.0.0.1"


def test_tokens_and_repeatable_dirs(monkeypatch, tmp_path):
    settings, _ = settings_from_args(
        [
            "--admin-token",
            "adm-9f3e",
            "--allowed-weights-dir",
            str(tmp_path),
            "--allowed-weights-dir",
            "/x",
        ]
    )
    assert settings.admin_token.get_secret_value() == "adm-9f3e"
    assert [str(p) for p in settings.allowed_weights_dir] == [str(tmp_path), "/x"]
    assert "adm-9f3e" not in repr(settings)


def test_invalid_values_exit_with_a_message(capsys):
    assert main(["--port", "70000"]) == 2
    assert "port" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--device", "tpu"])


def test_prepare_only_reports_a_missing_model_dir(tmp_path, capsys):
    assert main(["--prepare-only", "--model", str(tmp_path / "nope")]) == 1
    assert "not a local Hugging Face model directory" in capsys.readouterr().err


def test_empty_tokens_mean_no_token(monkeypatch):
    monkeypatch.setenv("VIGOR_API_TOKEN", "")
    monkeypatch.setenv("VIGOR_ADMIN_TOKEN", "  ")
    settings, _ = settings_from_args([])
    assert settings.api_token is None and settings.admin_token is None


def test_flags_cannot_be_abbreviated():
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--ho", "0.0.0.0"])


def test_batch_budget_defaults_by_device_unless_set():
    default = Settings()
    assert default.batch_tokens_on("cpu") < default.batch_tokens_on("cuda")
    settings, _ = settings_from_args(["--max-batch-tokens", "300"])
    assert settings.batch_tokens_on("cpu") == settings.batch_tokens_on("cuda") == 300
    # Without the flag the loop's memory caps each micro-batch; with it, the flag is the budget.
    assert default.batch_budget == "loop" and settings.batch_budget == "tokens"


# --- a CLI user's first start, as real `vigor-serve` processes -----------------------------
def run_serve(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "vigor_service.cli", *args],
        capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def last_line(text: str) -> str:
    return text.strip().splitlines()[-1]


def test_help_shows_each_default_and_its_variable():
    out = run_serve("--help").stdout
    flat = " ".join(out.split())
    assert "(default: 8000; env VIGOR_PORT)" in flat
    assert "(default: 127.0.0.1; env VIGOR_HOST)" in flat
    assert "(default: on; env VIGOR_EXIT_ON_LOAD_ERROR)" in flat
    assert "(default: none; env VIGOR_ADMIN_TOKEN)" in flat


def test_a_bad_model_exits_1_with_one_line_and_no_traceback(tmp_path):
    port = str(free_port())
    result = run_serve("--model", str(tmp_path / "nope"), "--port", port)
    assert result.returncode == 1, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    line = last_line(result.stderr)
    assert line.startswith("vigor-serve: model failed to load:"), line
    assert str(tmp_path / "nope") in line and "not a local Hugging Face model directory" in line


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_device_cuda_without_cuda_exits_1_saying_so():
    result = run_serve("--model", "default", "--device", "cuda", "--port", str(free_port()))
    assert result.returncode == 1, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert "torch sees no CUDA device" in last_line(result.stderr)


def test_a_port_clash_exits_1_before_loading_anything():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_serve("--port", str(port), timeout=60)
    assert result.returncode == 1, result.stderr[-2000:]
    line = last_line(result.stderr)
    assert line == (
        f"vigor-serve: cannot listen on 127.0.0.1:{port}: Address already in use "
        "(another server on this port? pick one with --port)"
    ), line
    assert "ready:" not in result.stderr and "Traceback" not in result.stderr
    assert "loaded " not in result.stderr  # the model was never loaded


def test_staying_up_after_a_load_error_is_opt_in(tmp_path):
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "vigor_service.cli", "--port", str(port),
         "--model", str(tmp_path / "nope"), "--no-exit-on-load-error"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        end, ready = time.monotonic() + 60, None
        while time.monotonic() < end and ready is None:
            assert proc.poll() is None, proc.stderr.read()
            with contextlib.suppress(httpx.HTTPError):
                r = httpx.get(f"http://127.0.0.1:{port}/ready", timeout=5)
                if "failed to load" in r.text:
                    ready = r
            time.sleep(0.2)
        assert ready is not None and ready.status_code == 503
        assert "not a local Hugging Face model directory" in ready.text
        time.sleep(1)
        assert proc.poll() is None  # still up
    finally:
        proc.terminate()
        proc.wait(30)


def test_binding_beyond_loopback_without_tokens_warns(tmp_path):
    result = run_serve("--host", "0.0.0.0", "--port", str(free_port()),
                       "--model", str(tmp_path / "nope"))  # fmt: skip
    assert result.returncode == 1
    assert "listening on 0.0.0.0 without --api-token: anyone who reaches" in result.stderr
    assert "listening on 0.0.0.0 without --admin-token" in result.stderr
    quiet = run_serve("--port", str(free_port()), "--model", str(tmp_path / "nope"))
    assert "without --api-token" not in quiet.stderr
