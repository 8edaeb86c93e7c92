"""The user's settings file (~/.config/launch/config.yaml) and the --hosts options' errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from launcher import cli
from launcher.commands.status_hosts import chosen_hosts
from launcher.config.userconfig import (
    DEFAULT_COMMAND,
    HostSettings,
    UserConfig,
    config_path,
    load_user_config,
)
from launcher.config.yamlsource import SweepFileError
from launcher.errors import UserError

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def settings(tmp_path, monkeypatch):
    """Return a function writing the settings file that $LAUNCH_CONFIG names."""
    path = tmp_path / "config.yaml"
    monkeypatch.setenv("LAUNCH_CONFIG", str(path))

    def write(text: str) -> Path:
        path.write_text(text)
        return path

    return write


def test_the_example_of_the_docs_reads_as_it_says(settings, tmp_path):
    (tmp_path / "ssh").write_text("Host *\n")
    path = settings("ssh_config: ssh   # beside the settings file\n"
                    "hosts:\n  athena: {}\n  minerva: {command: ~/envs/lab/bin/launch}\n"
                    "  ned:\n")
    config = load_user_config()
    assert config == UserConfig(path=str(path), ssh_config=str(tmp_path / "ssh"),
                                hosts=(HostSettings("athena"),
                                       HostSettings("minerva", "~/envs/lab/bin/launch"),
                                       HostSettings("ned")))
    assert config.host("myrtle") == HostSettings("myrtle", DEFAULT_COMMAND)


@pytest.mark.parametrize("text, line, key, words", [
    ("hosts:\n  athena:\n    comand: launch\n", 3, "hosts.athena.comand",
     "unknown key (allowed: command)"),
    ("ssh_config: /nonexistent/ssh_config\n", 1, "ssh_config", "no such file"),
    ("hosts: [athena, minerva]\n", 1, "hosts", "must map host names"),
    ("host:\n  athena: {}\n", 1, "host", "unknown key (allowed: ssh_config, hosts)"),
    ("hosts:\n  -oProxyCommand=x: {}\n", 2, "hosts.-oProxyCommand=x",
     "is not an ssh host name"),
    ("hosts:\n  athena: {command: ''}\n", 2, "hosts.athena.command", "must be the remote"),
    ("hosts:\n  athena: {}\n  athena: {}\n", 3, "hosts.athena", "duplicate key"),
])
def test_a_bad_settings_file_names_file_line_and_key(settings, text, line, key, words):
    path = settings(text)
    with pytest.raises(SweepFileError) as err:
        load_user_config()
    assert (err.value.file, err.value.line, err.value.key) == (str(path), line, key)
    assert words in str(err.value)


def test_a_bad_settings_file_exits_2_naming_file_line_and_key(settings, tmp_path):
    path = settings("ssh_config: ~/.ssh/config\nhosts:\n  athena: {}\n  minerva: {comand: x}\n")
    done = subprocess.run([sys.executable, "-m", "launcher.cli", "status", "--hosts", "all"],
                          capture_output=True, text=True, cwd=tmp_path,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO),
                               "LAUNCH_CONFIG": str(path), "HOME": str(tmp_path)})
    assert done.returncode == 2
    assert done.stderr.startswith(f"launch: error: {path}:")  # the first fault: ssh_config
    (tmp_path / ".ssh").mkdir()
    (tmp_path / ".ssh" / "config").write_text("")
    done = subprocess.run(done.args, capture_output=True, text=True, cwd=tmp_path,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO),
                               "LAUNCH_CONFIG": str(path), "HOME": str(tmp_path)})
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == (f"launch: error: {path}:4: key 'hosts.minerva.comand': unknown key "
                           "(allowed: command)\n")


def test_where_the_settings_file_is(monkeypatch, tmp_path):
    monkeypatch.delenv("LAUNCH_CONFIG", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    assert config_path() == (tmp_path / "launch" / "config.yaml", False)
    assert load_user_config() == UserConfig()  # the default file may be missing
    monkeypatch.setenv("LAUNCH_CONFIG", str(tmp_path / "mine.yaml"))
    assert config_path() == (tmp_path / "mine.yaml", True)
    with pytest.raises(UserError, match="LAUNCH_CONFIG=.*mine.yaml: no such file"):
        load_user_config()  # one named on purpose must exist


def test_hosts_all_and_named_hosts():
    config = UserConfig(path="c.yaml", hosts=(HostSettings("athena"), HostSettings("ned", "x")))
    assert chosen_hosts("all", config) == list(config.hosts)
    assert chosen_hosts("ned, myrtle,ned", config) == [HostSettings("ned", "x"),
                                                         HostSettings("myrtle")]
    with pytest.raises(UserError, match="--hosts all: no hosts in c.yaml"):
        chosen_hosts("all", UserConfig(path="c.yaml"))
    with pytest.raises(UserError, match="not an ssh host name"):
        chosen_hosts("athena,-oProxyCommand=touch /tmp/x", config)


@pytest.mark.parametrize("argv, words", [
    (["status", "--pick", "2"], "--free, --pick and --timeout go with --hosts"),
    (["status", "--hosts", "a", "--timeout", "0"], "--timeout takes a positive number"),
    (["status", "--hosts", "a", "--pick", "2", "--json"], "--pick prints one host's name"),
    (["status", "--hosts", "a", "--free", "-1"], "--free takes a number of GPUs"),
    (["status", "--hosts", "a", "cifar"], "ssh HOST launch status cifar"),
])
def test_hosts_options_that_do_not_fit_exit_2(argv, words, capsys, settings):
    settings("hosts: {a: {}}\n")
    assert cli.main(argv) == 2
    assert words in capsys.readouterr().err
