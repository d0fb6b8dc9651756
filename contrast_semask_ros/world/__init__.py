"""The cost image placed in the world, where a planner can use it (ROS-free).

- `cloud`: the cost node's `cost_cloud` output, a sensor_msgs/PointCloud2 payload (x, y, z,
  cost, confidence) built by back-projecting the cost image onto the ground plane or along an
  aligned depth image.
- `grid`: a rolling cost grid around the robot, the core of the `cost_grid` output (a
  nav_msgs/OccupancyGrid in `grid_frame`).

Frames follow docs/SUPERVISION.md section 1 (REP 103/105; camera optical frame z forward,
x right, y down); poses are `T_a_b` 4x4 matrices as in `supervision.geometry`.
"""
