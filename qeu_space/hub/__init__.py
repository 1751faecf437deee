"""Publishing to the Hugging Face Hub: uploads, adapters and their model cards.

- :mod:`.upload`: tokens, repo ids and the one upload path (``push_folder``).
- :mod:`.adapters`: what an adapter folder holds, and pushing it with its card.
- :mod:`.model_card`: the card (Hub metadata and the page) built from plain inputs.
- :mod:`.summary`: the adapter summary dataclasses both of the above share.
- :mod:`.metadata`: a card's YAML checked as the Hub checks it, plus the project's keys.
- :mod:`.processor` (with :mod:`.bundle`): the model's view shipped in its folder as
  ``processing_qeu.py``, for users of plain transformers.
- :mod:`.feedback_card`: the feedback dataset's card and records without server paths.
"""
