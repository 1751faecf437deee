"""The NSOART image variant: the composite with the SOARTC map of its lower product blended over it.

The seeds saw models learn the defect's place faster from these composites. The map uses the
fixed colour scale of :mod:`qeu_space.soartc.overlay`, so a passed product stays cool and every
defect glows alike across a dataset.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from qeu_space.geometry import CompositeLayout
from qeu_space.soartc import blend_heatmap, soartc


def nsoart_image(
    composite: Image.Image, layout: CompositeLayout, *, alpha: float = 0.45
) -> Image.Image:
    """``composite`` with the SOARTC heatmap of its test panel blended over that panel.

    The reference and test panels are cut out with ``layout.crop_box``; labels, margins and the
    reference panel are left as they are. Returns a new RGB image of the same size.
    """
    if composite.size != (layout.size, layout.size):
        raise ValueError(
            f"composite is {composite.size[0]} x {composite.size[1]}, the layout expects "
            f"{layout.size} x {layout.size}"
        )
    rgb = composite.convert("RGB")
    ref_box = layout.crop_box("reference")
    test_box = layout.crop_box("test")
    reference = np.asarray(rgb.crop(ref_box))
    test = np.asarray(rgb.crop(test_box))
    result = soartc(reference, test, register=True)  # each product in its canonical frame
    out = rgb.copy()
    out.paste(blend_heatmap(test, result, alpha=alpha), test_box[:2])
    return out
