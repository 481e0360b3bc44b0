"""Network output -> HU on the exact input grid -> masked, clipped, cast -> atomic compressed .mha."""

from postprocessing.restore import finalise_hu, to_input_grid
from postprocessing.write import write_image_atomic

__all__ = ["finalise_hu", "to_input_grid", "write_image_atomic"]
