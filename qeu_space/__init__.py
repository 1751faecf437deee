"""QEU Inspection Space: the library behind the dataset tools, the training code and the Space."""

from qeu_space.vocabulary import DefectKind, Direction, Finding, Position

__all__ = ["DefectKind", "Direction", "Finding", "Position"]
