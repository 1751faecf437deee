"""QEU Inspection Space: base vs fine-tuned answers beside SOARTC heatmaps, with feedback.

``python app.py`` serves on 127.0.0.1 (``GRADIO_SERVER_NAME`` / ``GRADIO_SERVER_PORT`` change it)
with the models named by the ``QEU_*`` variables (README, "Running the Space"); by default the
embedded ones under ``models/``. Samples are rendered by ``dataset_tools``.
"""

from __future__ import annotations

import logging
import os

import numpy as np
import spaces  # noqa: F401 - before torch (imported below): ZeroGPU patches CUDA at import
from PIL import Image

from dataset_tools.compose import SampleSpec, compose_uploads, make_sample
from dataset_tools.render import HOUSINGS, PIN_STYLES, Nuisances
from dataset_tools.sampling import draw_spec, row_rng
from qeu_space.geometry import CompositeLayout
from qeu_space.hub.upload import quiet_http_logs
from qeu_space.ui import AppSettings, Case, SampleRequest, build_demo, launch_options
from qeu_space.ui.cases import COMPOSITE_SIZE
from qeu_space.ui.settings import DEFAULT_GALLERY_KINDS
from qeu_space.vocabulary import DefectKind

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
LAYOUT = CompositeLayout(COMPOSITE_SIZE)


class SyntheticSamples:
    """Cases made by the dataset tools: the same renderer and composite as the datasets."""

    housings = HOUSINGS
    pin_styles = PIN_STYLES

    def gallery(
        self, count: int, seed: int, kinds: tuple[DefectKind, ...] = DEFAULT_GALLERY_KINDS
    ) -> list[Case]:
        """Test-split samples (held-out defect positions), labels drawn, reproducible; defects
        of ``kinds`` (``QEU_GALLERY_KINDS``), drawn as ``--kinds`` draws them in a dataset."""
        cases = []
        for index in range(count):
            rng = row_rng(seed, "test", index)
            spec = draw_spec("qa", "test", index, rng, unlabelled_fraction=0.0, kinds=kinds)
            sample = make_sample(spec, rng, layout=LAYOUT)
            cases.append(Case(sample.image, sample.findings, f"sample {sample.id}"))
        return cases

    def look_gallery(self, seed: int) -> list[Case]:
        """One sample of each look family (held-out ones included): what "any look" means."""
        from dataset_tools.looks import gallery_samples

        return [
            Case(sample.image, sample.findings, f"look {family}", look=family)
            for family, sample in gallery_samples(seed, size=LAYOUT.size)
        ]

    def generate(self, request: SampleRequest) -> Case:
        spec = SampleSpec(
            f"generated-{request.seed}",
            request.housing,
            request.pins,
            request.findings,
            request.labels_drawn,
        )
        nuisances = Nuisances() if request.nuisances else Nuisances.off()
        rng = np.random.default_rng(request.seed)
        sample = make_sample(spec, rng, layout=LAYOUT, nuisances=nuisances)
        return Case(sample.image, sample.findings, f"generated seed {request.seed}")

    def compose_pair(self, reference: Image.Image, test: Image.Image) -> Image.Image:
        return compose_uploads(reference, test, LAYOUT)


logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
quiet_http_logs()  # huggingface_hub's HTTP clients log each request URL (signed ones too) at INFO
settings = AppSettings.from_env()
demo = build_demo(settings, SyntheticSamples())

if __name__ == "__main__":
    demo.launch(**launch_options(settings))
