"""Feedback on predictions: the SQLite store and its Hub mirror (:mod:`.store`).

The public names are re-exported here: ``from qeu_space.feedback import FeedbackStore``.
"""

from __future__ import annotations

from qeu_space.feedback.store import (
    MAX_ANSWER,
    MAX_COMMENT,
    MIRROR_PATTERNS,
    OUTCOMES,
    RATED,
    TRUTH_SOURCES,
    FeedbackEntry,
    FeedbackStore,
    HubMirror,
    StoredFeedback,
    canonical_answer,
    clean_text,
    default_db_path,
    open_store,
    png_bytes,
)

__all__ = [
    "MAX_ANSWER",
    "MAX_COMMENT",
    "MIRROR_PATTERNS",
    "OUTCOMES",
    "RATED",
    "TRUTH_SOURCES",
    "FeedbackEntry",
    "FeedbackStore",
    "HubMirror",
    "StoredFeedback",
    "canonical_answer",
    "clean_text",
    "default_db_path",
    "open_store",
    "png_bytes",
]
