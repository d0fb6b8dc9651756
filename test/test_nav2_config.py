"""config/nav2_cost_grid.yaml, the example Nav2 local costmap fed by the cost node's cost_grid:
checked statically against the node's parameters (Nav2 itself is not installable here)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from contrast_semask_ros import params

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.static


def test_the_costmap_reads_the_cost_grid_as_the_node_publishes_it() -> None:
    document = yaml.safe_load((REPO / 'config' / 'nav2_cost_grid.yaml').read_text())
    costmap = document['local_costmap']['local_costmap']['ros__parameters']
    layer = costmap[costmap['plugins'][0]]
    assert layer['plugin'] == 'nav2_costmap_2d::StaticLayer'
    assert layer['map_topic'] == '/cost_grid'  # the node's relative cost_grid, no namespace
    assert layer['map_subscribe_transient_local'] is True
    # graded costs: 0-100 scaled to 0-254, not thresholded to free/lethal
    assert costmap['trinary_costmap'] is False and costmap['lethal_cost_threshold'] == 100
    assert costmap['track_unknown_space'] is True  # -1 stays unknown
    assert costmap['global_frame'] == params.DEFAULTS['grid_frame']
    assert costmap['resolution'] == params.DEFAULTS['grid_resolution_m']
    assert costmap['rolling_window'] is True
    assert max(costmap['width'], costmap['height']) <= params.DEFAULTS['grid_size_m']
