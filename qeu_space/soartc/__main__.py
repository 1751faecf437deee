"""``python -m qeu_space.soartc REFERENCE TEST``: image score, top positions, a heatmap PNG."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from qeu_space.cli import (
    CliError,
    OneLineParser,
    check_output_file,
    existing_path,
    float_in,
    int_at_least,
)

# the kernels' settings, repeated so that --help answers without loading numba, scipy and
# matplotlib (tests/test_cli.py checks they match qeu_space.soartc.core and .overlay)
DESCRIPTORS = ("pixels", "selfsim")
DEFAULT_DESCRIPTOR = "pixels"
DEFAULT_VMAX = 40.0


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="python -m qeu_space.soartc",
        description=(
            "Compare a test image of a connector with a good reference image by SOARTC: print "
            "the image score (the heatmap's maximum, in robust standard deviations) and the most "
            "anomalous pin positions, and optionally save the heatmap over the test image."
        ),
        epilog=(
            "Each image is one connector (3 x 9 pins, rows U/C/D, columns 1-9), about as the "
            "dataset renderer frames it: each is registered (its pin lattice found, shift, "
            "rotation and scale removed) before the comparison, and an image with no connector "
            "is refused. Example: python -m qeu_space.soartc good.png test.png --out heat.png"
        ),
    )
    parser.add_argument(
        "reference", type=existing_path("file"), help="image of a good product (PNG, JPEG, ...)"
    )
    parser.add_argument(
        "test", type=existing_path("file"), help="image of the product under inspection, same size"
    )
    parser.add_argument("--out", type=Path, help="write the heatmap overlay (with colour bar) here")
    parser.add_argument(
        "--window", type=int_at_least(2), default=8, help="window side in pixels (default 8)"
    )
    parser.add_argument(
        "--stride", type=int_at_least(1), default=1, help="window step in pixels (default 1)"
    )
    parser.add_argument(
        "--descriptor",
        choices=DESCRIPTORS,
        default=DEFAULT_DESCRIPTOR,
        help=f"what a window is compared by (default {DEFAULT_DESCRIPTOR})",
    )
    parser.add_argument(
        "--references",
        type=existing_path("file"),
        nargs="+",
        default=(),
        metavar="GOOD",
        help="more good images: the normal variation is taken from them",
    )
    parser.add_argument(
        "--no-register",
        action="store_true",
        help="compare the pixels as they are: do not find each connector's pin lattice first "
        "(for images that are not connectors, or already registered)",
    )
    parser.add_argument(
        "--no-align",
        action="store_true",
        help="do not remove a remaining global shift of up to 4 px either",
    )
    parser.add_argument(
        "--top", type=int_at_least(1, 27), default=3, help="how many positions to print (1-27)"
    )
    parser.add_argument(
        "--vmax",
        type=float_in(),
        default=DEFAULT_VMAX,
        help=f"top of the overlay's colour scale (default {DEFAULT_VMAX:g}; 0 = this image's max)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.out is not None:
        try:  # before the comparison
            check_output_file(args.out, "--out")
        except CliError as err:
            parser.error(str(err))
    try:  # read the images before the kernels load: a file that is no image is answered at once
        reference = _open(args.reference)
        test = _open(args.test)
        goods = [_open(p) for p in args.references]
    except OSError as err:
        parser.error(str(err))
    from qeu_space.geometry import ConnectorGeometry
    from qeu_space.soartc.core import soartc
    from qeu_space.soartc.overlay import heatmap_overlay
    from qeu_space.soartc.positions import top_positions

    try:
        result = soartc(
            reference,
            test,
            window=args.window,
            stride=args.stride,
            references=goods or None,
            descriptor=args.descriptor,
            align=not args.no_align,
            register=not args.no_register,
        )
    except (OSError, ValueError, TypeError) as err:
        parser.error(str(err))
    print(f"image score: {result.image_score:.2f}")
    h, w = result.heatmap.shape
    try:
        geometry = ConnectorGeometry(w, h)
    except ValueError:
        print("top positions: none (image too small for the pin grid)")
    else:
        ranked = top_positions(result, geometry, k=args.top)
        print("top positions: " + ", ".join(f"{p.name} {score:.2f}" for p, score in ranked))
    if args.out is not None:
        vmax = None if args.vmax <= 0 else args.vmax
        heatmap_overlay(test, result, vmax=vmax).save(args.out)
        print(f"wrote {args.out}")
    return 0


def _open(path: Path) -> Image.Image:
    try:
        with Image.open(path) as img:
            img.load()
            return img
    except FileNotFoundError:
        raise OSError(f"no such image: {path}") from None
    except UnidentifiedImageError:
        raise OSError(f"cannot read {path}: not an image PIL can read") from None


if __name__ == "__main__":
    sys.exit(main())
