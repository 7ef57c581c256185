"""Core ML code: model, STTF, ANC, compute accounting, engines, data. Imports no ROS."""
