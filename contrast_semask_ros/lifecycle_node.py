"""`cost_map_lifecycle_node`: the managed variant of `cost_map_node` (same logic, node.py).

configure opens the model and creates the topics and services, activate starts processing
frames, deactivate pauses, cleanup frees the model (GPU memory), shutdown from any state. Drive
it with `ros2 lifecycle set /cost_map configure` / `activate`, or a lifecycle manager.
"""

from __future__ import annotations

import sys
from typing import Any

from contrast_semask_ros.node import STARTUP_ERRORS, _CostMap, run

try:
    from rclpy.lifecycle import LifecycleNode, TransitionCallbackReturn
except ImportError:  # pragma: no cover - node.run says what is missing
    LifecycleNode = object  # type: ignore[assignment,misc]


class CostMapLifecycleNode(_CostMap, LifecycleNode):
    """A managed cost map node; see the module docstring."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__('cost_map', **kwargs)
        self._declare()

    def on_configure(self, state: Any) -> TransitionCallbackReturn:
        try:
            self._start()
        except STARTUP_ERRORS as err:
            self.get_logger().error(f'cannot configure: {err}')
            return TransitionCallbackReturn.FAILURE
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: Any) -> TransitionCallbackReturn:
        self._active = True
        return super().on_activate(state)

    def on_deactivate(self, state: Any) -> TransitionCallbackReturn:
        self._active = False
        return super().on_deactivate(state)

    def on_cleanup(self, state: Any) -> TransitionCallbackReturn:
        self._stop()
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: Any) -> TransitionCallbackReturn:
        self._active = False
        self._stop()
        return TransitionCallbackReturn.SUCCESS


def main(argv: list[str] | None = None) -> int:
    """Console script `cost_map_lifecycle_node` (exit codes as cost_map_node's)."""
    return run(CostMapLifecycleNode, argv)


if __name__ == '__main__':
    sys.exit(main())
