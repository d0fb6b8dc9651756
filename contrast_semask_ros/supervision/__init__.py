"""Self-supervision (issue 15): the robot's own sensing labels the terrain it drove over.

ROS-free: `geometry` (cameras from CameraInfo, REP 103/105 poses, footprint rasterisation); the
IMU and velocity traversal costs and the labelling of past frames follow. docs/SUPERVISION.md.
"""
