"""The settings table is the single source of truth: docs/settings.md, CLI flags, environment, validation."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from emulator.cli import build_parser, main, markdown_table, settings_types
from emulator.settings import SETTINGS, Setting, Settings, SettingsError, tls_host_names
from tests.support.emulator_process import run_cli

ROOT = Path(__file__).resolve().parent.parent
BLOCK = re.compile(r"<!-- settings-table:start -->\n(.*?)\n<!-- settings-table:end -->", re.DOTALL)

# A valid value, different from the default, for every type of setting.
SAMPLE: dict[type, str] = {int: "7", float: "0.5", bool: "true", str: "x", Path: "some/dir"}


def sample(setting: Setting) -> str:
    if setting.choices:
        return next(c for c in setting.choices if c != setting.default)
    if setting.name == "clients":
        return "shop=token-a"
    if setting.name == "oauth_clients":
        return "shop=id:secret"
    if setting.name == "port":
        return "8123"
    if setting.name.endswith("upstream_url"):
        return "http://127.0.0.1:9"
    if setting.type in (int, float):  # the first candidate within the setting's bounds
        candidates = [SAMPLE[setting.type], "0.75", str(setting.default + 1), str(setting.default - 1)]
        for raw in candidates:
            try:
                if setting.parse(raw) != setting.default:
                    return raw
            except SettingsError:
                continue
    return SAMPLE[setting.type]


def test_docs_settings_table_is_the_generated_one() -> None:
    match = BLOCK.search((ROOT / "docs" / "settings.md").read_text(encoding="utf-8"))
    assert match, "docs/settings.md has no settings-table block"
    assert match.group(1) == markdown_table(), "docs/settings.md is stale: run `python -m emulator settings`"


def test_settings_command_prints_the_table() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "emulator", "settings"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == markdown_table()


def test_settings_types_are_the_generated_ones() -> None:
    committed = (ROOT / "emulator" / "settings_types.pyi").read_text(encoding="utf-8")
    assert committed == settings_types(), (
        "emulator/settings_types.pyi is stale: run `python -m emulator settings-types > emulator/settings_types.pyi`"
    )


def test_settings_types_command_prints_the_module(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["settings-types"]) == 0
    assert capsys.readouterr().out == settings_types()


@pytest.mark.parametrize("setting", SETTINGS, ids=[s.name for s in SETTINGS])
def test_every_setting_is_a_flag_and_an_environment_variable(setting: Setting) -> None:
    value = sample(setting)
    expected = setting.parse(value)
    assert expected != setting.default
    env = {setting.env: value}
    if setting.name == "admin" and value == "token":
        env["SMARTY_ADMIN_TOKEN"] = "t"
    partner = {"tls_cert": "SMARTY_TLS_KEY", "tls_key": "SMARTY_TLS_CERT"}.get(setting.name)
    if partner:  # a certificate and its key go together
        env[partner] = "y"
    assert getattr(Settings.from_sources(env), setting.name) == expected
    args = build_parser().parse_args(["serve", setting.flag, value])
    overrides = {setting.name: getattr(args, setting.name)}
    env.pop(setting.env)
    assert getattr(Settings.from_sources(env, overrides), setting.name) == expected
    # The flag wins over the environment.
    flag_wins = Settings.from_sources({**env, setting.env: str(setting.default)}, overrides)
    assert getattr(flag_wins, setting.name) == expected


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"SMARTY_PORT": "abc"}, "SMARTY_PORT='abc': expected a whole number"),
        ({"SMARTY_PORT": "70000"}, "SMARTY_PORT='70000': must be at most 65535"),
        ({"SMARTY_LOG_FORMAT": "xml"}, "SMARTY_LOG_FORMAT='xml': expected one of human, json"),
        ({"SMARTY_CASSETTE": "../x"}, "SMARTY_CASSETTE='../x': must match [A-Za-z0-9][A-Za-z0-9._-]{0,127}"),
        (
            {"SMARTY_UPSTREAM_URL": "smarty.mail.ru"},
            r"SMARTY_UPSTREAM_URL='smarty.mail.ru': must match https?://[^/?#\s]+/?",
        ),
        ({"SMARTY_ACCESS_LOG": "maybe"}, "SMARTY_ACCESS_LOG='maybe': expected true or false"),
        ({"SMARTY_TLS_CERT": "cert.pem"}, "SMARTY_TLS_CERT and SMARTY_TLS_KEY go together: give both or neither"),
        (
            {"SMARTY_TLS_PORT": "8080"},
            "SMARTY_PORT, SMARTY_TLS_PORT and SMARTY_PROXY_PORT must be different ports",
        ),
    ],
)
def test_a_wrong_value_names_the_setting(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_sources(env)
    assert str(caught.value) == message


@pytest.mark.parametrize(
    ("flags", "variables", "message"),
    [
        (["--port", "abc"], {}, "smarty-emulator: SMARTY_PORT='abc': expected a whole number"),
        ([], {"SMARTY_LOG_FORMAT": "xml"}, "smarty-emulator: SMARTY_LOG_FORMAT='xml': expected one of human, json"),
    ],
    ids=["flag", "environment"],
)
def test_serve_with_a_wrong_value_fails_fast_with_a_clear_message(
    tmp_path: Path, flags: list[str], variables: dict[str, str], message: str
) -> None:
    done = run_cli("serve", *flags, "--data-dir", str(tmp_path / "data"), env=variables, timeout=60)
    assert done.returncode == 2
    assert done.stderr.strip() == message
    assert not (tmp_path / "data").exists()  # nothing was started


def test_the_ca_export_cannot_be_the_data_dirs_own_ca_record(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Writing the bare certificate over the record would lose the CA's key."""
    monkeypatch.chdir(tmp_path)
    for export in (str(tmp_path / "data" / "tls-ca.pem"), "data/tls-ca.pem", "data/../data/tls-ca.pem"):
        with pytest.raises(SettingsError, match=r"SMARTY_TLS_CA_EXPORT=.* is the data dir's own CA record"):
            Settings.from_sources({"SMARTY_TLS_CA_EXPORT": export, "SMARTY_DATA_DIR": "data"})
    Settings.from_sources({"SMARTY_TLS_CA_EXPORT": "data/ca.pem", "SMARTY_DATA_DIR": "data"})


def test_tls_hosts_are_host_names_or_ip_addresses() -> None:
    settings = Settings.from_sources({"SMARTY_TLS_HOSTS": " Emulator.Test., Bücher.test,*.apps.test,10.0.0.7,::1,"})
    assert tls_host_names(settings.tls_hosts) == (
        "emulator.test",
        "xn--bcher-kva.test",
        "*.apps.test",
        "10.0.0.7",
        "::1",
    )
    for bad in ("two words.test", "a..b", "host:443", "[::1]", "x" * 70 + ".test", "https://emulator.test"):
        with pytest.raises(SettingsError, match=r"SMARTY_TLS_HOSTS: .* is neither a host name nor an IP address"):
            Settings.from_sources({"SMARTY_TLS_HOSTS": f"emulator.test,{bad}"})
