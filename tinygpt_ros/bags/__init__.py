"""ROS 2 bag reading and writing through the pure-Python rosbags library (no ROS needed)."""
