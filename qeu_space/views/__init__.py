"""What a model sees: an upload read safely (:mod:`.image_io`), then framed (:mod:`.framing`)."""
