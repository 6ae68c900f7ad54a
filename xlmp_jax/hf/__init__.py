"""The interop wing: everything between our params and `transformers` / PyTorch.

``names`` (the one weight-name map, both directions), ``layout`` (what an export directory holds),
``writer`` (the writer behind ``python -m xlmp_jax.export``), ``load`` (transformers directories and
checkpoints in: ``load_hf_params`` for ``config.init_from_hf``, ``load_pretrained``) and ``encoder`` (the
inference ``Encoder`` that ``load_pretrained`` returns and the evals use). The PyTorch side is the
top-level package ``xlmp_torch``, which needs no JAX.
"""
