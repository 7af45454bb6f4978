"""roca: installs the roca_ros node package and the ROS-free roca_core library.

Works both under colcon (ament_python: data files land in share/roca_ros) and with plain
``pip install -e .`` in the project's virtual environment (scripts/setup_env.sh).
"""
from glob import glob

from setuptools import find_packages, setup

PACKAGE = "roca_ros"

setup(
    name=PACKAGE,
    version="0.1.0",
    description="ROCA single-image CAD retrieval and 9-DoF alignment as a ROS 2 node",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["roca_core", "roca_core.*", "roca_ros", "roca_ros.*"]),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml") + glob("config/*.rviz") + glob("config/*.xml")),
        (f"share/{PACKAGE}/models", glob("models/*.safetensors") + glob("models/*.md")),
    ],
    # Runtime dependencies are pinned in requirements/lock.txt (installed by
    # scripts/setup_env.sh); ROS users get rclpy and messages from their ROS install.
    install_requires=[],
    zip_safe=False,
    entry_points={
        "console_scripts": [
            "roca_node = roca_ros.node:main",
            "roca_lifecycle_node = roca_ros.lifecycle_node:main",
            "roca-demo = roca_ros.demo:main",
            "roca-predict = roca_core.cli.predict:main",
            "roca-train = roca_core.cli.train:main",
            "roca-eval = roca_core.cli.eval:main",
            "roca-train-yaw = roca_core.cli.train_yaw:main",
            "roca-train-centre = roca_core.cli.train_centre:main",
            "roca-train-class = roca_core.cli.train_class:main",
            "roca-train-shape = roca_core.cli.train_shape:main",
            "roca-train-retrieval = roca_core.cli.train_retrieval:main",
            "roca-graft-heads = roca_core.cli.graft_heads:main",
            "roca-train-up = roca_core.cli.train_up:main",
            "roca-cad-db = roca_core.cli.cad_db:main",
            "roca-make-dataset = roca_core.cli.make_dataset:main",
        ],
    },
)
