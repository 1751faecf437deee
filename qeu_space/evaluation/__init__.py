"""Scoring: task metrics as pure functions (:mod:`.metrics`) and evaluation runs (:mod:`.evaluate`).

``python -m qeu_space.evaluate`` is the command line over :mod:`.evaluate`.
"""
