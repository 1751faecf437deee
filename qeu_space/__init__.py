"""QEU Inspection Space: the library behind the dataset tools, the training code and the Space."""

from qeu_space.vocabulary import DefectKind, Direction, Finding, Position

REPOSITORY_URL = "https://huggingface.co/spaces/<owner>/qeu-inspection-space"
"""Where the code lives; dataset cards link to it. A placeholder until the project has its home:
set it to the published Space (or repository) before pushing datasets."""

__all__ = ["REPOSITORY_URL", "DefectKind", "Direction", "Finding", "Position"]
