"""Looks: a named, seeded choice of every scene part, and the families they are drawn from.

A :class:`Look` is one rig: a :class:`Product` (housing, pins and sockets, light, bench: what the
reference and the test share) and a :class:`~dataset_tools.looks.camera.Camera` (the rig's lens
and tilt, and one shot's placement, exposure, white balance, noise, focus and JPEG).
:meth:`Look.shot` draws another shot on the same rig: the reference and the test of a sample are
two shots of one look.

A :class:`LookFamily` is where looks are drawn from. :data:`TRAIN_FAMILIES` may be trained on;
:data:`HELD_OUT_FAMILIES` never are (no training family draws a black housing on wood, nor a
camera tilted past 6.5 degrees): every figure is also given on them. ``classic`` is the project's
first renderer (:func:`dataset_tools.render.render_connector` without a look), unchanged.

Example:
    >>> import numpy as np
    >>> look = draw_look("black-on-wood", np.random.default_rng(0))
    >>> look.family, look.product.housing.colour, look.product.bench.kind
    ('black-on-wood', 'black', 'wood')
    >>> resolve_looks("held-out")
    ('black-on-wood', 'steep-tilt')
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from dataset_tools.looks import bench as bench_part
from dataset_tools.looks import housing as housing_part
from dataset_tools.looks import light as light_part
from dataset_tools.looks import pins as pins_part
from dataset_tools.looks.bench import Bench
from dataset_tools.looks.camera import Camera, CameraRange, sample_rig, shot
from dataset_tools.looks.housing import Housing
from dataset_tools.looks.light import Light
from dataset_tools.looks.pins import Pins
from qeu_space.geometry import CompositeLayout, ConnectorGeometry

CLASSIC = "classic"


@dataclass(frozen=True)
class Product:
    """What the reference and the test of a sample share: the product and the rig's lamp and
    bench."""

    housing: Housing
    pins: Pins
    light: Light
    bench: Bench


@dataclass(frozen=True)
class Look:
    """One rig and one shot on it.

    Attributes:
        family: the :data:`LOOK_FAMILIES` name it was drawn from.
        product: the product part (``None`` for ``classic``, drawn by the first renderer).
        camera: the imaging part: the rig's camera and this shot's settings (``None`` for
            ``classic``).
    """

    family: str
    product: Product | None = None
    camera: Camera | None = None

    @property
    def classic(self) -> bool:
        return self.product is None

    def shot(self, rng: np.random.Generator, geo: ConnectorGeometry | None = None) -> Look:
        """Another shot of the same product on the same rig (placement, exposure, white balance,
        focus, noise level, JPEG and a small camera jitter drawn anew)."""
        if self.classic:
            return self
        family = LOOK_FAMILIES[self.family]
        return replace(self, camera=shot(self.camera, rng, family.camera, geo or _GEO))


_GEO = CompositeLayout().connector
_ALL_HOUSINGS = tuple(housing_part.COLOURS)


@dataclass(frozen=True)
class LookFamily:
    """Ranges a look is drawn from (each part sampled by its own module)."""

    name: str
    description: str
    housings: tuple[str, ...] = _ALL_HOUSINGS
    pin_shapes: tuple[str, ...] = pins_part.SHAPES
    metals: tuple[str, ...] = tuple(pins_part.METALS)
    tops: tuple[str, ...] = pins_part.TOPS
    lights: tuple[str, ...] = light_part.KINDS
    benches: tuple[str, ...] = bench_part.KINDS
    clutter: bool = True
    camera: CameraRange = field(default_factory=CameraRange)
    held_out: bool = False

    def draw(self, rng: np.random.Generator, geo: ConnectorGeometry | None = None) -> Look:
        """A look of this family: a product, a rig, and a first shot."""
        if self.name == CLASSIC:
            return Look(CLASSIC)
        housing = housing_part.sample(rng, self.housings)
        pins = pins_part.sample(rng, self.pin_shapes, self.metals, self.tops)
        light = light_part.sample(rng, self.lights)
        benches = self.benches
        if not self.held_out and housing.colour == "black":  # black on wood is held out
            benches = tuple(b for b in benches if b != "wood") or ("plain",)
        bench = bench_part.sample(rng, benches, self.clutter)
        camera = sample_rig(rng, self.camera)
        look = Look(self.name, Product(housing, pins, light, bench), camera)
        return look.shot(rng, geo)


_TRAIN_TILT = (0.0, 6.5)

LOOK_FAMILIES: dict[str, LookFamily] = {
    f.name: f
    for f in (
        LookFamily(CLASSIC, "the first renderer: light housings, gold pins, a dark plain bench"),
        LookFamily(
            "grey-gold",
            "grey or dark grey housing, square gold pins with flat tops, soft or directional "
            "light, plain or gradient bench, nearly top-down",
            housings=("grey", "dark grey"),
            pin_shapes=("square",),
            metals=("gold",),
            tops=("flat",),
            lights=("diffuse", "directional"),
            benches=("plain", "gradient"),
            clutter=False,
            camera=CameraRange(tilt=(0.0, 3.0), focal=(4.0, 9.0), vignetting=(0.0, 0.15)),
        ),
        LookFamily(
            "light-round",
            "white, beige, natural, blue or green housing, round domed pins, ring or diffuse "
            "light, colour cast and vignetting, slight tilt",
            housings=("white", "beige", "natural", "blue", "green", "grey"),
            pin_shapes=("round",),
            tops=("domed", "flat"),
            lights=("ring", "diffuse", "specular"),
            benches=("plain", "gradient", "esd"),
            camera=CameraRange(tilt=(0.0, 4.0), vignetting=(0.1, 0.45), white_balance=0.12),
        ),
        LookFamily(
            "dark-plastic",
            "black, dark grey or blue housing, any pins, a directional, ring or specular lamp, "
            "ESD mat, metal or plain bench, tilt up to 6.5 degrees",
            housings=("black", "dark grey", "blue"),
            lights=("directional", "specular", "ring", "diffuse"),
            benches=("esd", "metal", "plain", "gradient"),
            camera=CameraRange(tilt=_TRAIN_TILT),
        ),
        LookFamily(
            "textured-bench",
            "light or coloured housing on wood, brushed metal or an ESD mat with clutter, tilt "
            "2-6.5 degrees, shallow depth of field",
            housings=("white", "beige", "grey", "natural", "green", "dark grey"),
            benches=("wood", "metal", "esd"),
            camera=CameraRange(tilt=(2.0, 6.5), defocus=(0.2, 1.3), dof=(0.3, 1.6)),
        ),
        LookFamily(
            "any",
            "every part drawn at random within the training ranges (tilt up to 6.5 degrees, "
            "never black on wood)",
            camera=CameraRange(tilt=_TRAIN_TILT, scale=(0.8, 1.12)),
        ),
        LookFamily(
            "black-on-wood",
            "HELD OUT: black housing on a wooden bench, any pins, light and camera within the "
            "training tilt range",
            housings=("black",),
            benches=("wood",),
            camera=CameraRange(tilt=_TRAIN_TILT),
            held_out=True,
        ),
        LookFamily(
            "steep-tilt",
            "HELD OUT: any product under a camera tilted 7-10 degrees, shorter lenses",
            camera=CameraRange(tilt=(7.0, 10.0), focal=(2.0, 6.0), scale=(0.8, 1.05)),
            held_out=True,
        ),
    )
}
"""Every look family by name."""

HELD_OUT_FAMILIES: tuple[str, ...] = tuple(n for n, f in LOOK_FAMILIES.items() if f.held_out)
"""Never trained on: a housing colour on a bench (black on wood) and a camera range (7-10 deg)."""
TRAIN_FAMILIES: tuple[str, ...] = tuple(n for n, f in LOOK_FAMILIES.items() if not f.held_out)
"""The families a training set may use (``classic`` among them)."""

LOOK_CHOICES = "all, train, held-out or a comma list of " + ", ".join(LOOK_FAMILIES)


def resolve_looks(text: str) -> tuple[str, ...]:
    """``all`` / ``train`` / ``held-out`` / ``a,b,c`` to family names (in :data:`LOOK_FAMILIES`
    order for the keywords, as given for a list).

    Example:
        >>> resolve_looks("classic, any")
        ('classic', 'any')
    """
    key = text.strip().lower()
    if key == "all":
        return tuple(LOOK_FAMILIES)
    if key == "train":
        return TRAIN_FAMILIES
    if key in ("held-out", "held_out", "heldout"):
        return HELD_OUT_FAMILIES
    names = tuple(dict.fromkeys(n.strip() for n in key.split(",") if n.strip()))
    unknown = [n for n in names if n not in LOOK_FAMILIES]
    if unknown or not names:
        raise ValueError(f"unknown look {', '.join(unknown) or repr(text)}; choose {LOOK_CHOICES}")
    return names


def draw_look(
    family_or_spec: str | LookFamily | Look,
    rng: np.random.Generator,
    geo: ConnectorGeometry | None = None,
) -> Look:
    """A look drawn from a family (a name or a :class:`LookFamily`); a :class:`Look` is
    returned as it is."""
    if isinstance(family_or_spec, Look):
        return family_or_spec
    if isinstance(family_or_spec, LookFamily):
        return family_or_spec.draw(rng, geo)
    names = resolve_looks(family_or_spec)
    if len(names) != 1:
        raise ValueError(f"draw_look takes one family, got {family_or_spec!r}")
    return LOOK_FAMILIES[names[0]].draw(rng, geo)
