"""The Ray a search runs on: start a local one (or join a cluster), with the environment and
``ray.init`` arguments the search needs, and shut it down after.

Security: a local Ray's GCS, raylet and workers listen on every interface of the machine, so a
Ray that lets in anyone who reaches it lets them run code as the user. Every Ray this tool starts
keeps Ray's token authentication on (Ray's default for a cluster it starts; the token is Ray's
own file, ``~/.ray/auth_token``, created readable by the user alone when it is missing).
Joining a cluster (``--address``) follows the cluster's settings: its token must be on this
machine (docs/scale.md).
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from rts.search.config.schema import ConfigError

log = logging.getLogger(__name__)

Echo = Callable[[str], None]
"""Where a search prints its progress lines."""

AUTH_MODE = "RAY_AUTH_MODE"
"""Ray's switch of token authentication (``token`` or ``disabled``). The tool never sets it: Ray
turns token authentication on for a cluster it starts (from 2.59), and sets it for this process
itself (it caches the mode, so setting it here after ``import ray`` would not take)."""

ENABLED_WARNING = "Token authentication is enabled for this Ray cluster"
"""The start of Ray's warning that it turned token authentication on (the safe default we
want, so not worth a warning on every search): dropped by :class:`QuietAuthDefault`."""

TOKEN_SOURCES = ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")
"""Environment variables through which Ray reads a token instead of ``~/.ray/auth_token``."""

RAY_ENV_DEFAULTS = {
    "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0",
    "RAY_AIR_NEW_OUTPUT": "0",
}
"""Environment set (if unset) before Ray starts: no warning about snapshotting the experiment
after every epoch's checkpoint (resume needs it), and Tune's classic output path (the search
prints its own progress). Nothing about authentication: Ray's default (on) stands."""


class QuietAuthDefault(logging.Filter):
    """Drops Ray's warning that it turned token authentication on (:data:`ENABLED_WARNING`);
    every other record, the warning that it is *off* included, passes."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(ENABLED_WARNING)


def quiet_auth_default() -> None:
    """Install :class:`QuietAuthDefault` on Ray's authentication logger (once)."""
    logger = logging.getLogger("ray._private.authentication.authentication_token_setup")
    if not any(isinstance(f, QuietAuthDefault) for f in logger.filters):
        logger.addFilter(QuietAuthDefault())


def default_token_path() -> Path:
    """Ray's default token file, ``~/.ray/auth_token``."""
    return Path.home() / ".ray" / "auth_token"


def ensure_token() -> Path | None:
    """Make sure a local Ray with token authentication has a token, readable by this user only.

    Ray would create ``~/.ray/auth_token`` itself, but with the umask's permissions (0644 under
    the usual 022). A token given by ``RAY_AUTH_TOKEN``/``RAY_AUTH_TOKEN_PATH`` or an existing
    file is left as it is.

    Returns:
        The file created, or ``None`` when a token was already there.
    """
    if any(os.environ.get(name) for name in TOKEN_SOURCES):
        return None
    path = default_token_path()
    if path.exists():
        return None
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(secrets.token_hex(32))
    log.info("created Ray's authentication token %s (mode 0600)", path)
    return path


def token_hint() -> str:
    """Where this process's Ray token is, for a message (never the token itself)."""
    if os.environ.get("RAY_AUTH_TOKEN"):
        return "$RAY_AUTH_TOKEN"
    return os.environ.get("RAY_AUTH_TOKEN_PATH") or str(default_token_path())


def check_local_auth(echo: Echo | None = None) -> bool:
    """Whether the local Ray about to start has token authentication; warn when the
    environment turned it off (``RAY_AUTH_MODE=disabled``, e.g. for a Ray test utility)."""
    if os.environ.get(AUTH_MODE, "").lower() == "disabled":
        message = (
            f"{AUTH_MODE}=disabled: this search's Ray accepts connections without a token, so "
            "anyone who can reach this machine can run code on it; unset it to keep Ray's "
            "token authentication"
        )
        log.warning(message)
        if echo is not None:
            echo(f"warning: {message}")
        return False
    return True


def ray_init_kwargs(
    address: str | None,
    num_cpus: int | None,
    *,
    worker_logs: bool = False,
    dashboard: bool = False,
) -> dict[str, Any]:
    """The arguments of ``ray.init`` for the search.

    Args:
        address: a cluster to join, or ``None`` for a new local Ray ("local": start one even
            if another cluster on this machine advertises itself in
            /tmp/ray/ray_current_cluster, which ``ray.init()`` would silently join).
        num_cpus: CPUs of a local Ray (``None``: all).
        worker_logs: show the trials' stdout/stderr and logs on the driver (``rts -v``).
        dashboard: start Ray's dashboard with a local Ray (a cluster has its own).
    """
    kwargs: dict[str, Any] = {"logging_level": logging.WARNING, "log_to_driver": worker_logs}
    if address:
        return {"address": address, **kwargs}
    return {"address": "local", "num_cpus": num_cpus, "include_dashboard": dashboard, **kwargs}


def check_dashboard() -> None:
    """Raise :class:`ConfigError` when Ray's dashboard packages (``ray[default]``) are missing."""
    try:
        import ray.dashboard.optional_deps  # noqa: F401  (what Ray itself checks)
    except ImportError:
        raise ConfigError(
            "--dashboard: Ray's dashboard packages are not installed; "
            'pip install "robust-task-search[dashboard]" (or "ray[default]")'
        ) from None


def check_ray_args(address: str | None, num_cpus: int | None) -> None:
    """Reject ``--num-cpus`` with ``--address`` and a CPU count below 1."""
    if num_cpus is not None and num_cpus < 1:
        raise ConfigError(f"--num-cpus must be >= 1, got {num_cpus}")
    if address and num_cpus is not None:
        raise ConfigError(
            f"--num-cpus {num_cpus}: caps a local Ray only; a cluster (--address {address}) "
            "has its own resources"
        )


@contextlib.contextmanager
def ray_session(
    address: str | None,
    num_cpus: int | None,
    *,
    worker_logs: bool = False,
    dashboard: bool = False,
    echo: Echo | None = None,
) -> Iterator[None]:
    """Start (or join) Ray for the search and shut it down after; reuse one already running.

    ``worker_logs`` and ``dashboard`` are :func:`ray_init_kwargs`'s; the dashboard's URL (of a
    local Ray with ``dashboard``, or of a joined cluster that has one) goes to ``echo``.
    """
    import ray

    if ray.is_initialized():
        yield
        return
    check_ray_args(address, num_cpus)
    if dashboard and not address:
        check_dashboard()
    for key, value in RAY_ENV_DEFAULTS.items():
        os.environ.setdefault(key, value)
    auth = bool(address) or check_local_auth(echo)
    if not address and auth:
        ensure_token()
        quiet_auth_default()
    context = ray.init(
        **ray_init_kwargs(address, num_cpus, worker_logs=worker_logs, dashboard=dashboard)
    )
    url = getattr(context, "dashboard_url", None)
    if echo is not None and url and (dashboard or address):
        where = "" if address or not auth else f" (log in with the token in {token_hint()})"
        echo(f"Ray dashboard: {url if '://' in url else 'http://' + url}{where}")
    try:
        yield
    finally:
        ray.shutdown()
