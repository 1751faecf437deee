"""Draw ``docs/looks.png``: one composite of each look family (a good reference over a product with
a bent, a missing and a short pin), labelled with the family's name (held-out ones marked).

Usage (from the repository root):
    python docs/make_looks_gallery.py [--seed 0] [--out docs/looks.png]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from PIL import Image, ImageDraw, ImageFont  # noqa: E402

from dataset_tools.looks import HELD_OUT_FAMILIES, gallery_samples  # noqa: E402

COLUMNS = 4
SIZE = 448  # the composite as the builders make it
TILE = 336  # as shown
BAR = 28


def gallery(seed: int = 0) -> Image.Image:
    samples = gallery_samples(seed, SIZE)
    rows = -(-len(samples) // COLUMNS)
    sheet = Image.new("RGB", (COLUMNS * TILE, rows * (TILE + BAR)), (16, 17, 20))
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default(size=18)
    for i, (family, sample) in enumerate(samples):
        x, y = (i % COLUMNS) * TILE, (i // COLUMNS) * (TILE + BAR)
        label = family + ("  (held out)" if family in HELD_OUT_FAMILIES else "")
        colour = (255, 190, 90) if family in HELD_OUT_FAMILIES else (236, 236, 228)
        draw.text((x + TILE // 2, y + BAR // 2), label, fill=colour, font=font, anchor="mm")
        sheet.paste(sample.image.resize((TILE, TILE), Image.LANCZOS), (x, y + BAR))
    return sheet


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "looks.png")
    args = parser.parse_args()
    gallery(args.seed).save(args.out, optimize=True)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
