"""Run a command inside a private network namespace, so no DDS packet leaves loopback.

Every test that starts DDS (any rclpy node) goes through `run_sealed`: the command runs under
`unshare --net` (as root, or as a mapped root in a new user namespace otherwise), the namespace's
loopback is brought up, and the environment sets `ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST` and a
per-run `ROS_DOMAIN_ID`. The namespace has no other interface, so even a misconfigured
participant cannot reach the network. Tests skip with the reason when no namespace can be made,
and fail instead under CI (CI=true): `require_sealed_dds`.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence

# inside the namespace: loopback up (with multicast, which Fast DDS may use on it), then exec
_BRING_UP_LO = 'ip link set lo up && ip link set lo multicast on && exec "$@"'


@functools.cache
def _unshare_prefix() -> tuple[str, ...] | None:
    if shutil.which('unshare') is None or shutil.which('ip') is None:
        return None
    for prefix in (('unshare', '--net'), ('unshare', '--user', '--map-root-user', '--net')):
        probe = subprocess.run([*prefix, 'sh', '-c', _BRING_UP_LO, 'sh', 'true'],
                               capture_output=True, timeout=30)
        if probe.returncode == 0:
            return prefix
    return None


def netns_unavailable_reason() -> str | None:
    """None when sealed runs work here, else why not (for pytest.skip)."""
    if _unshare_prefix() is None:
        return ('cannot create a private network namespace (needs `unshare` and `ip` from '
                'util-linux/iproute2, and root or unprivileged user namespaces); DDS tests are '
                'never run on the open network')
    return None


def outside_namespace_reason(program: str) -> str | None:
    """None inside a private network namespace (only `lo`), else why `program`, which starts
    DDS, must not run here. Every DDS process of the tests and benchmarks checks this first."""
    import socket

    interfaces = sorted(name for _, name in socket.if_nameindex())  # of this net namespace
    if interfaces == ['lo']:
        return None
    return (f'{program} starts DDS and runs only inside a private network namespace '
            f'(ros_harness.run_sealed); this one has {interfaces}')


def on_ci() -> bool:
    """CI sets CI=true (`.ci/run` too): there a test that cannot run must fail, never skip."""
    return os.environ.get('CI', '').strip().lower() in ('true', '1', 'yes')


def skip_or_fail(reason: str, module_level: bool = False) -> None:
    """pytest.skip with the reason here; pytest.fail under CI, so that a CI run can never pass
    with its DDS tests silently skipped."""
    import pytest

    if on_ci():
        pytest.fail(f'CI=true, and this test cannot run: {reason}', pytrace=False)
    pytest.skip(reason, allow_module_level=module_level)


def require_sealed_dds(module_level: bool = False) -> None:
    """Skip (fail under CI) unless rclpy imports and a private network namespace can be made."""
    try:
        import rclpy  # noqa: F401
    except ImportError as err:
        skip_or_fail(f'needs the real rclpy wheels (requirements/ros-jazzy.txt): {err}',
                     module_level)
    reason = netns_unavailable_reason()
    if reason is not None:
        skip_or_fail(reason, module_level)


def without_wheel_bootstrap(env: dict[str, str]) -> dict[str, str]:
    """`env` for a Python of any venv: the ros-* wheels' bootstrapper re-executes every
    interpreter once with LD_LIBRARY_PATH pointing at its own venv's ROS libraries and sets a
    guard variable. Undo both, so a process of another venv (another distro) bootstraps itself
    instead of loading this venv's libraries."""
    env = dict(env)
    env.pop('_ROS_WHEELS_BOOTSTRAP_COMPLETE', None)
    prefix = os.path.realpath(sys.prefix)
    kept = [p for p in env.get('LD_LIBRARY_PATH', '').split(os.pathsep)
            if p and not os.path.realpath(p).startswith(prefix + os.sep)
            and os.path.realpath(p) != prefix]
    if kept:
        env['LD_LIBRARY_PATH'] = os.pathsep.join(kept)
    else:
        env.pop('LD_LIBRARY_PATH', None)
    return env


def sealed_env(domain_id: int | None = None) -> dict[str, str]:
    """The environment for DDS inside the namespace: localhost discovery, own domain."""
    env = without_wheel_bootstrap(dict(os.environ))
    env.pop('ROS_LOCALHOST_ONLY', None)  # deprecated on Jazzy, ignored by Kilted
    env['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'
    env['ROS_DOMAIN_ID'] = str(domain_id if domain_id is not None else 1 + os.getpid() % 100)
    env['PYTHONUNBUFFERED'] = '1'
    return env


def run_sealed(argv: Sequence[str], timeout: float, domain_id: int | None = None,
               cwd: str | os.PathLike | None = None) -> subprocess.CompletedProcess[str]:
    """Run argv in a fresh private network namespace with the sealed DDS environment."""
    prefix = _unshare_prefix()
    if prefix is None:
        raise RuntimeError(netns_unavailable_reason())
    return subprocess.run([*prefix, 'sh', '-c', _BRING_UP_LO, 'sh', *argv],
                          env=sealed_env(domain_id), capture_output=True, text=True,
                          timeout=timeout, cwd=cwd)
