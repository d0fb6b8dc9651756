"""ROS 2 runtime for contrast_semask: learned visual traversability cost.

Imports nothing on purpose: the runtime must import without rclpy and without training
dependencies (torch, onnx, ...). rclpy is imported only by the node module.
"""
