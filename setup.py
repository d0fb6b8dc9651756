"""ament_python packaging: contrast_semask_ros (runtime) and contrast_semask_train (offline)."""

from glob import glob

from setuptools import find_packages, setup

package_name = 'contrast_semask_ros'

# Installed under <prefix>/share/... (the ament layout) by `pip install .` and colcon; note that
# `pip install -e .` does not install data_files. Entries whose glob matches nothing are dropped
# so that directories that do not exist yet (launch/, config/) are tolerated.
data_files = [
    ('share/ament_index/resource_index/packages', ['resource/' + package_name]),
    ('share/' + package_name, ['package.xml']),
    ('share/' + package_name + '/launch', glob('launch/*.launch.py')),
    ('share/' + package_name + '/config', glob('config/*.yaml') + glob('config/*.rviz')),
    ('share/' + package_name + '/config/train', glob('config/train/*.yaml')),
]
data_files = [(target, sorted(files)) for target, files in data_files if files]

setup(
    name=package_name,
    version='0.1.0',
    packages=find_packages(exclude=['test', 'test.*']),
    data_files=data_files,
    # Deliberately minimal: rclpy and the message packages come from apt on the robot (ROS 2),
    # opencv may come from apt as python3-opencv, and torch is only needed for training/export
    # or the PyTorch backend. See package.xml for the rosdep keys and README.md for the rest.
    install_requires=['setuptools', 'numpy'],
    extras_require={
        'train': ['torch>=2.4', 'pyyaml', 'tqdm', 'matplotlib', 'tensorboard',
                  'opencv-python-headless', 'pillow', 'scikit-image'],
        'export': ['onnx', 'onnxscript', 'onnxruntime'],
        # contrast-semask-replay of an ONNX model (--params reads YAML; --supervision needs
        # scipy), contrast-semask-calibrate-imu and the synthetic `contrast-semask-data
        # drive-bag` (scikit-image textures); no torch
        # (test/test_install_robot.py walks their imports, test_install_extras.py installs it)
        'replay': ['rosbags', 'pyyaml', 'matplotlib', 'tqdm', 'opencv-python-headless',
                   'onnxruntime', 'scikit-image', 'scipy'],
        # self-supervised patch costs (contrast_semask_ros/supervision: geometry, IMU cost)
        'supervision': ['scipy', 'opencv-python-headless'],
        'dev': ['pytest', 'ruff', 'catkin-pkg'],
    },
    python_requires='>=3.10',
    zip_safe=True,
    maintainer='contrast_semask maintainers',
    maintainer_email='dev@contrast-semask.org',
    description='Learned visual traversability cost (contrastive SeMask-FPN) for ROS 2, '
    'with training and export tools.',
    license='Apache-2.0',
    # colcon runs pytest (rather than unittest) only when tests_require names it.
    tests_require=['pytest'],
    entry_points={
        'console_scripts': [
            'contrast-semask-convert = contrast_semask_train.convert_checkpoint:main',
            'contrast-semask-data = contrast_semask_train.data.cli:main',
            'contrast-semask-train = contrast_semask_train.train:main',
            'contrast-semask-eval = contrast_semask_train.evaluate:main',
            'contrast-semask-export = contrast_semask_train.export_cli:main',
            'contrast-semask-replay = contrast_semask_ros.replay:main',
            'contrast-semask-calibrate-imu = contrast_semask_ros.calibrate_imu:main',
            'cost_map_node = contrast_semask_ros.node:main',
            'cost_map_lifecycle_node = contrast_semask_ros.lifecycle_node:main',
            'patch_cost_node = contrast_semask_ros.patch_cost_node:main',
        ],
    },
)
