"""tinygpt_ros: adaptive-compute vision-language perception (STTF + ANC) for ROS 2."""

__version__ = "0.1.0"
