"""Models and what they need: one loading path, the model families, devices and the tiny models.

- :mod:`.loading`: ``load_model(base, adapter=None)`` for every model (safetensors only).
- :mod:`.families`: how each family is prompted, collated and scored (Florence-2, chat VLMs, ViT).
- :mod:`.devices`: ZeroGPU, local CUDA or the CPU.
- :mod:`.attention`: the ViT's attention rollout.
- :mod:`.inspection_vlm`, :mod:`.local_tokenizer`, :mod:`.tiny_models`: models built here from
  configs (the shipped inspection VLM; tiny random-weight models for tests and benchmarks).
"""
