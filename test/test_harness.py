"""The DDS test harness's own rules: under CI a test that cannot make its network namespace
fails instead of skipping (test/ros_harness.py)."""

from __future__ import annotations

import pytest
import ros_harness


@pytest.mark.parametrize(('ci', 'outcome'), [('true', pytest.fail.Exception),
                                             ('', pytest.skip.Exception)])
def test_no_namespace_skips_locally_and_fails_under_ci(monkeypatch: pytest.MonkeyPatch, ci: str,
                                                       outcome: type[BaseException]) -> None:
    monkeypatch.setenv('CI', ci)
    monkeypatch.setattr(ros_harness, 'netns_unavailable_reason', lambda: 'no unshare here')
    with pytest.raises(outcome, match='no unshare here'):
        ros_harness.require_sealed_dds()


def test_sealed_runs_have_only_loopback() -> None:
    ros_harness.require_sealed_dds()
    code = 'import socket; print(sorted(name for _, name in socket.if_nameindex()))'
    import sys

    proc = ros_harness.run_sealed([sys.executable, '-c', code], timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "['lo']"
    env = ros_harness.sealed_env(7)
    assert env['ROS_AUTOMATIC_DISCOVERY_RANGE'] == 'LOCALHOST' and env['ROS_DOMAIN_ID'] == '7'
