"""No one else runs code on the search's Ray: token authentication stays on for every Ray the
tool starts, and a client without the token is refused."""

from __future__ import annotations

import logging
import os
import stat
import subprocess
import sys

import pytest

from rts.search.engine.session import (
    AUTH_MODE,
    ENABLED_WARNING,
    RAY_ENV_DEFAULTS,
    QuietAuthDefault,
    check_local_auth,
    ensure_token,
    ray_session,
)

OUTSIDER = """
import sys
import ray
ray.init(address=sys.argv[1], logging_level="ERROR")
@ray.remote
def run():
    return "ran"
print(ray.get(run.remote(), timeout=30))
"""


def test_the_tool_never_turns_auth_off_and_only_ray_s_notice_that_it_is_on_is_dropped():
    assert AUTH_MODE not in RAY_ENV_DEFAULTS
    keep = QuietAuthDefault()

    def record(msg: str) -> logging.LogRecord:
        return logging.LogRecord("ray", logging.WARNING, __file__, 1, msg, None, None)

    assert not keep.filter(record(f"{ENABLED_WARNING}. Set RAY_AUTH_MODE=disabled to opt out."))
    assert keep.filter(record("Token authentication is disabled for this Ray cluster. Anyone"))


def test_the_token_file_is_made_readable_by_the_user_alone(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    for name in ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        monkeypatch.delenv(name, raising=False)
    made = ensure_token()
    assert made == tmp_path / ".ray" / "auth_token"
    assert stat.S_IMODE(made.stat().st_mode) == 0o600
    assert len(made.read_text()) == 64
    assert ensure_token() is None  # an existing token is kept
    monkeypatch.setenv("RAY_AUTH_TOKEN", "x" * 32)
    made.unlink()
    assert ensure_token() is None and not made.exists()  # a token given by the environment


def test_disabling_auth_by_hand_is_said_out_loud(monkeypatch, caplog):
    lines: list[str] = []
    monkeypatch.setenv(AUTH_MODE, "disabled")
    with caplog.at_level(logging.WARNING):
        assert check_local_auth(lines.append) is False
    assert "accepts connections without a token" in lines[0]
    monkeypatch.setenv(AUTH_MODE, "token")
    assert check_local_auth(lines.append) is True and len(lines) == 1


@pytest.mark.slow
def test_a_client_without_the_token_is_refused_by_the_searchs_ray(tmp_path, monkeypatch):
    """The outsider of the issue: no token (an empty HOME, no RAY_* variables), the node's own
    address; the search's Ray is started the way ``rts search`` starts it."""
    import ray

    for name in (AUTH_MODE, "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        monkeypatch.delenv(name, raising=False)
    with ray_session(None, 1):
        address = ray.get_runtime_context().gcs_address

        @ray.remote
        def run() -> str:
            return "ran"

        assert ray.get(run.remote()) == "ran"  # the search itself is let in
        home = tmp_path / "outsider"
        home.mkdir()
        env = {"PATH": os.environ["PATH"], "HOME": str(home)}
        out = subprocess.run(
            [sys.executable, "-c", OUTSIDER, address],
            env=env,
            capture_output=True,
            text=True,
            timeout=240,
        )
    assert out.returncode != 0 and "ran" not in out.stdout
    assert "InvalidAuthToken" in out.stderr or "AuthenticationError" in out.stderr
    assert os.environ[AUTH_MODE] == "token"  # what the session set for this process
