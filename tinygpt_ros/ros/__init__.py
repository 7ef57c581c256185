"""Thin ROS 2 layer: message conversion, lifecycle nodes, parameters, diagnostics, bring-up."""
