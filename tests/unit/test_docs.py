"""The docs keep up with the code: every knob is documented."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from services.cli.app import app

ROOT = Path(__file__).resolve().parents[2]


def test_configuration_reference_matches_the_settings_classes() -> None:
    result = CliRunner().invoke(app, ["config-docs"])
    assert result.exit_code == 0, result.output
    documented = (ROOT / "docs" / "configuration.md").read_text()
    assert documented == result.output, (
        "docs/configuration.md is stale: run `freshrec config-docs > docs/configuration.md`"
    )
    assert "FRESHREC_BATCH_SIZE" in documented and "FRESHREC_MAX_K" in documented


def test_every_cli_command_has_help() -> None:
    runner = CliRunner()
    for command in ([], ["infra"], ["stack"], ["data"], ["bench"], ["eval"], ["run"]):
        result = runner.invoke(app, [*command, "--help"])
        assert result.exit_code == 0, (command, result.output)
        assert "Usage" in result.output
