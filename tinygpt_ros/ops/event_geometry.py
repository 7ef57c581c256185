"""Sensor geometry: events of a WxH event camera onto the model's square event grid.

Why: the model's event input is a 128x128 grid (spec.config.EVENT_SENSOR) but real sensors are
1280x720 (IMX636), 640x480 (DVXplorer), 346x260 (DAVIS346). 'scale' scales each axis (the whole
field of view reaches the model, aspect not kept); 'crop' takes the centred square of side
min(W, H) and scales it (aspect kept, the events left and right of it, or above and below, are
not used). Integer arithmetic: pixel x goes to floor(x * grid / side), so a sensor that is an
exact multiple of the grid maps blocks of pixels onto one cell.
"""

from __future__ import annotations

import numpy as np

MAPPINGS = ("scale", "crop")


def map_to_grid(events: np.ndarray, width: int, height: int, grid: int, mapping: str
                ) -> np.ndarray:
    """EVENT_DTYPE events on a width x height sensor -> the events on the grid x grid model
    grid (a new array; events outside a crop are left out). Identity when the sensor is the
    grid. Coordinates must already lie inside the sensor (the decoders check)."""
    if mapping not in MAPPINGS:
        raise ValueError(f"mapping {mapping!r} must be one of {MAPPINGS}")
    if width <= 0 or height <= 0:
        raise ValueError(f"sensor size must be positive, got {width}x{height}")
    if width == grid and height == grid:
        return events
    x = events["x"].astype(np.int64)
    y = events["y"].astype(np.int64)
    if mapping == "scale":
        out = events.copy()
        out["x"] = x * grid // width
        out["y"] = y * grid // height
        return out
    side = min(width, height)
    x0, y0 = (width - side) // 2, (height - side) // 2
    keep = (x >= x0) & (x < x0 + side) & (y >= y0) & (y < y0 + side)
    out = events[keep]
    out["x"] = (x[keep] - x0) * grid // side
    out["y"] = (y[keep] - y0) * grid // side
    return out


def sensor_from_grid(x: np.ndarray, y: np.ndarray, width: int, height: int, grid: int
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Grid coordinates -> the first sensor pixel of each cell under 'scale' (the inverse the
    driver-shaped sample bags use: map_to_grid(..., 'scale') gives the grid coordinates back)."""
    sx = -(-np.asarray(x, dtype=np.int64) * width // grid)
    sy = -(-np.asarray(y, dtype=np.int64) * height // grid)
    return sx.astype(np.uint16), sy.astype(np.uint16)
