"""ros2 launch contrast_semask_ros cost_map.launch.py image:=/camera/image_raw \
    patch_cost:=/traversal/patch_cost model_path:=/path/model.engine"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare


def generate_launch_description() -> LaunchDescription:
    return LaunchDescription([
        DeclareLaunchArgument('image', default_value='/camera/image_raw',
                              description='camera topic (Image, or CompressedImage with '
                              'image_transport: compressed in the params file)'),
        DeclareLaunchArgument('patch_cost', default_value='/traversal/patch_cost',
                              description='measured patch costs: 32FC1 masks, NaN = none, '
                              'stamped like the camera frame they are drawn on'),
        DeclareLaunchArgument('model_path',
                              description='model to run: .engine, .onnx (with its .json spec) '
                              'or .pt checkpoint'),
        DeclareLaunchArgument('params_file',
                              default_value=PathJoinSubstitution([
                                  FindPackageShare('contrast_semask_ros'), 'config',
                                  'cost_map.yaml']),
                              description='node parameters (YAML keyed /**:)'),
        DeclareLaunchArgument('namespace', default_value='',
                              description='namespace for the node and its relative topics'),
        Node(
            package='contrast_semask_ros',
            executable='cost_map_node',
            name='cost_map',
            namespace=LaunchConfiguration('namespace'),
            parameters=[LaunchConfiguration('params_file'),
                        {'model_path': LaunchConfiguration('model_path')}],
            remappings=[('image', LaunchConfiguration('image')),
                        ('patch_cost', LaunchConfiguration('patch_cost'))],
            output='screen',
        ),
    ])
