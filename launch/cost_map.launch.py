"""ros2 launch contrast_semask_ros cost_map.launch.py image:=/camera/image_raw \
    patch_cost:=/traversal/patch_cost model_path:=/path/model.engine [supervision:=imu]

supervision:=none (the default) starts the cost map node alone, exactly as before. imu,
velocity or both also start patch_cost_node (self-supervision, signal = that value), wired to
the cost node: it publishes the cost node's patch_cost topic and labels the frames the cost node
announces on `keyframes` (both relative to the same namespace); the cost node then keeps a
keyframe every 0.2 m and 60 frames (COST_MAP_OVERRIDES; patch_cost.yaml keeps max_keyframes 56
and max_age_s 9.0 below those and buffer_age_s). rviz:=true also starts rviz2 with
config/cost_map.rviz."""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution, PythonExpression
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

from contrast_semask_ros.supervision.params import COST_MAP_OVERRIDES


def generate_launch_description() -> LaunchDescription:
    supervision = LaunchConfiguration('supervision')
    # IfCondition + PythonExpression: in launch since Dashing (Humble, Jazzy and later alike)
    supervised = IfCondition(PythonExpression(["'", supervision, "' != 'none'"]))
    unsupervised = IfCondition(PythonExpression(["'", supervision, "' == 'none'"]))
    share = FindPackageShare('contrast_semask_ros')
    cost_map_params = [LaunchConfiguration('params_file'),
                       {'model_path': LaunchConfiguration('model_path')}]
    cost_map_remappings = [('image', LaunchConfiguration('image')),
                           ('patch_cost', LaunchConfiguration('patch_cost')),
                           ('camera_info', LaunchConfiguration('camera_info'))]
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
                              default_value=PathJoinSubstitution([share, 'config',
                                                                  'cost_map.yaml']),
                              description='node parameters (YAML keyed /**:)'),
        DeclareLaunchArgument('namespace', default_value='',
                              description='namespace for the nodes and their relative topics'),
        DeclareLaunchArgument('supervision', default_value='none',
                              choices=['none', 'imu', 'velocity', 'both'],
                              description='self-supervision: none (patch costs come from '
                              'elsewhere), or start patch_cost_node with this signal'),
        DeclareLaunchArgument('supervision_params_file',
                              default_value=PathJoinSubstitution([share, 'config',
                                                                  'patch_cost.yaml']),
                              description='patch_cost_node parameters (YAML keyed /**:); its '
                              'signal comes from the supervision argument'),
        DeclareLaunchArgument('camera_info', default_value='/camera/camera_info',
                              description='supervision: sensor_msgs/CameraInfo of the camera '
                              'on the image topic'),
        DeclareLaunchArgument('odom', default_value='/odom',
                              description='supervision: nav_msgs/Odometry (both nodes)'),
        DeclareLaunchArgument('imu', default_value='/imu/data',
                              description='supervision: sensor_msgs/Imu'),
        DeclareLaunchArgument('cmd_vel', default_value='/cmd_vel',
                              description='supervision velocity or both: geometry_msgs/Twist '
                              '(TwistStamped with cmd_vel_stamped: true)'),
        DeclareLaunchArgument('rviz', default_value='false', choices=['true', 'false'],
                              description='true: also start rviz2 (needs rviz2) with '
                              'config/cost_map.rviz: cost_grid, cost_cloud, footprints and '
                              'cost_overlay in odom (topics for namespace "")'),
        Node(  # supervision:=none: the cost map node as it always was
            package='contrast_semask_ros',
            executable='cost_map_node',
            name='cost_map',
            namespace=LaunchConfiguration('namespace'),
            parameters=cost_map_params,
            remappings=cost_map_remappings,
            output='screen',
            condition=unsupervised,
        ),
        Node(  # supervised: keyframes close enough together and kept long enough to label
            package='contrast_semask_ros',
            executable='cost_map_node',
            name='cost_map',
            namespace=LaunchConfiguration('namespace'),
            parameters=[*cost_map_params, {**COST_MAP_OVERRIDES, 'patch_qos_depth': 60}],
            remappings=[*cost_map_remappings, ('odom', LaunchConfiguration('odom'))],
            output='screen',
            condition=supervised,
        ),
        Node(  # publishes on the cost node's patch_cost; reads its relative `keyframes`
            package='contrast_semask_ros',
            executable='patch_cost_node',
            name='patch_cost',
            namespace=LaunchConfiguration('namespace'),
            parameters=[LaunchConfiguration('supervision_params_file'),
                        {'signal': supervision}],
            remappings=[('patch_cost', LaunchConfiguration('patch_cost')),
                        ('camera_info', LaunchConfiguration('camera_info')),
                        ('odom', LaunchConfiguration('odom')),
                        ('imu', LaunchConfiguration('imu')),
                        ('cmd_vel', LaunchConfiguration('cmd_vel'))],
            output='screen',
            condition=supervised,
        ),
        Node(  # rviz:=true: a view of the outputs (not a dependency: robots run without it)
            package='rviz2',
            executable='rviz2',
            name='rviz2',
            arguments=['-d', PathJoinSubstitution([share, 'config', 'cost_map.rviz'])],
            output='screen',
            condition=IfCondition(LaunchConfiguration('rviz')),
        ),
    ])
