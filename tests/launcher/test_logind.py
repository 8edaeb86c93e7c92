"""The logout warning, against stand-in `busctl` and `loginctl` that answer as logind would."""

import pytest

from launcher.local import logind

IN_SESSION = "0::/user.slice/user-1000.slice/session-42.scope\n"
IN_USER_SCOPE = "0::/user.slice/user-1000.slice/user@1000.service/app.slice/run-r7.scope\n"


@pytest.fixture
def logind_says(tmp_path, monkeypatch):
    """Put a fake busctl and loginctl first on PATH; return a function that sets answers."""
    def set_answers(kill: str | None, exclude: str = 'as 1 "root"', linger: str = "no",
                    only: str = "as 0"):
        script = (f'#!/bin/sh\ncase "$*" in\n  *KillUserProcesses*) echo "{kill}";;\n'
                  f"  *KillExcludeUsers*) echo '{exclude}';;\n"
                  f"  *KillOnlyUsers*) echo '{only}';;\n  *) exit 1;;\nesac\n")
        if kill is None:  # as on a machine without a system bus
            script = "#!/bin/sh\necho 'Failed to connect to bus' >&2\nexit 1\n"
        (tmp_path / "busctl").write_text(script)
        (tmp_path / "busctl").chmod(0o755)
        (tmp_path / "loginctl").write_text(f'#!/bin/sh\necho "{linger}"\n')
        (tmp_path / "loginctl").chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))  # never the machine's own logind
    return set_answers


def test_a_session_scope_is_told_apart_from_a_user_scope():
    assert logind.in_login_session(IN_SESSION)
    assert not logind.in_login_session(IN_USER_SCOPE)
    assert not logind.in_login_session("0::/system.slice/sshd.service\n")


@pytest.mark.parametrize("kill, exclude, cgroup, warned", [
    (None, "", IN_SESSION, False),                      # no system bus (container)
    ("b false", "", IN_SESSION, False),                 # the usual Debian/Ubuntu default
    ("b true", 'as 1 "root"', IN_USER_SCOPE, False),    # already outside the session
    ("b true", 'as 2 "root" "alice"', IN_SESSION, False),  # alice is excluded
    ("b true", 'as 1 "root"', IN_SESSION, True),
])
def test_who_is_warned(logind_says, kill, exclude, cgroup, warned):
    logind_says(kill, exclude)
    assert (logind.logout_warning("alice", cgroup) is not None) == warned


def test_kill_only_users_that_leaves_us_out_means_no_warning(logind_says):
    logind_says("b true", only='as 1 "bob"')
    assert logind.logout_warning("alice", IN_SESSION) is None
    logind_says("b true", only='as 2 "bob" "alice"')
    assert logind.logout_warning("alice", IN_SESSION) is not None


def test_the_warning_says_what_to_do_with_and_without_lingering(logind_says):
    logind_says("b true", linger="no")
    text = logind.logout_warning("alice", IN_SESSION)
    assert "KillUserProcesses=yes" in text and "`loginctl enable-linger` once, then" in text
    assert "systemd-run --user --scope launch sweep" in text
    logind_says("b true", linger="yes")
    assert "enable-linger" not in logind.logout_warning("alice", IN_SESSION)
