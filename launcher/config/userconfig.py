"""The user's own settings: which machines `launch status --hosts all` asks, and how.

The file is ~/.config/launch/config.yaml ($XDG_CONFIG_HOME moves ~/.config, $LAUNCH_CONFIG
names the file itself):

    ssh_config: ~/.ssh/config       # optional: handed to ssh as -F
    hosts:                          # name -> settings; the name is an ssh alias or host name
      athena: {}
      minerva: {command: ~/envs/lab/bin/launch}   # the remote launch (default: launch)

Everything else (users, ports, jump hosts, keys) is the user's ssh configuration. Unknown keys
and bad values are errors naming the file, the line and the key, as in sweep files
(launcher/config/yamlsource.py).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from launcher.errors import UserError

if TYPE_CHECKING:
    from launcher.config.yamlsource import SourceMap

CONFIG_ENV = "LAUNCH_CONFIG"
DEFAULT_COMMAND = "launch"
TOP_KEYS = ("ssh_config", "hosts")
HOST_KEYS = ("command",)
# What ssh takes as a destination: an alias, a host name or address, user@host. A leading
# "-" would be read as an option, a space or a control character would split the argument.
HOST_NAME = re.compile(r"[A-Za-z0-9_.%@:\[\]][A-Za-z0-9_.%@:\[\]-]*")


@dataclass(frozen=True)
class HostSettings:
    """How to reach one host: its name for ssh, and the command that runs launch there."""

    name: str
    command: str = DEFAULT_COMMAND


@dataclass(frozen=True)
class UserConfig:
    """The settings file as read: where it was (None: no file), ssh's config, the hosts."""

    path: str | None = None
    ssh_config: str | None = None
    hosts: tuple[HostSettings, ...] = ()

    def host(self, name: str) -> HostSettings:
        """Return the settings of a host: the file's, or the defaults for one it does not name."""
        for settings in self.hosts:
            if settings.name == name:
                return settings
        return HostSettings(name)


def bad_host_name(name: str) -> str | None:
    """Return why a host name cannot be handed to ssh, or None when it can."""
    if not name:
        return "empty host name"
    if not HOST_NAME.fullmatch(name):
        return f"'{name}' is not an ssh host name or alias (letters, digits, . _ - @ : %)"
    return None


def config_path() -> tuple[Path, bool]:
    """Return the settings file's path and whether $LAUNCH_CONFIG chose it."""
    chosen = os.environ.get(CONFIG_ENV)
    if chosen:
        return Path(chosen).expanduser(), True
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "launch" / "config.yaml", False


def load_user_config(path: Path | None = None) -> UserConfig:
    """Return the user's settings; an empty UserConfig when the default file does not exist.

    A file named by $LAUNCH_CONFIG (or `path`) must exist. Raises SweepFileError (a
    UserError) naming the file, the line and the key of anything wrong in it.
    """
    explicit = path is not None
    if path is None:
        path, explicit = config_path()
    if not path.exists():
        if explicit:
            raise UserError(f"{CONFIG_ENV}={path}: no such file")
        return UserConfig()
    from launcher.config.yamlsource import SourceMap, read_yaml

    data, lines, _ = read_yaml(path)
    return parse_user_config(data, SourceMap(str(path), lines))


def parse_user_config(data: Any, src: SourceMap) -> UserConfig:
    """Return the UserConfig that parsed YAML data describes; `src` is its SourceMap."""
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise src.error((), "the settings file must be a mapping of keys", TOP_KEYS, key="")
    for key in data:
        if key not in TOP_KEYS:
            raise src.error((key,), "unknown key", TOP_KEYS)
    ssh_config = data.get("ssh_config")
    if ssh_config is not None:
        ssh_config = _ssh_config(ssh_config, src)
    hosts = data.get("hosts") or {}
    if not isinstance(hosts, Mapping):
        raise src.error(("hosts",), "must map host names to their settings, e.g. athena: {}")
    return UserConfig(path=src.file, ssh_config=ssh_config,
                      hosts=tuple(_host(name, value, src) for name, value in hosts.items()))


def _ssh_config(value: Any, src: SourceMap) -> str:
    if not isinstance(value, str) or not value:
        raise src.error(("ssh_config",), "must be the path of an ssh config file")
    path = Path(value).expanduser()
    if not path.is_absolute():  # relative to the settings file, not to where launch runs
        path = Path(src.file).parent / path
    if not path.is_file():
        raise src.error(("ssh_config",), f"no such file: {path}")
    return str(path)


def _host(name: str, value: Any, src: SourceMap) -> HostSettings:
    why = bad_host_name(name)
    if why:
        raise src.error(("hosts", name), why)
    if value is None:  # `athena:` with nothing after it means the defaults, like `athena: {}`
        return HostSettings(name)
    if not isinstance(value, Mapping):
        raise src.error(("hosts", name), "must be a mapping of settings, e.g. {} or "
                                         "{command: ~/envs/lab/bin/launch}", HOST_KEYS)
    for key in value:
        if key not in HOST_KEYS:
            raise src.error(("hosts", name, key), "unknown key", HOST_KEYS)
    command = value.get("command", DEFAULT_COMMAND)
    if not isinstance(command, str) or not command.strip() or not command.isprintable():
        raise src.error(("hosts", name, "command"),
                        "must be the remote launch as a shell would run it, "
                        "e.g. ~/envs/lab/bin/launch")
    return HostSettings(name, command.strip())
