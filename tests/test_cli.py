import pytest

from vigor_service.cli import build_parser, main, settings_from_args
from vigor_service.settings import Settings


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
