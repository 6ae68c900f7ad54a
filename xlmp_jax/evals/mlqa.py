"""The sweep's ``mlqa`` eval: XTREME's MLQA (context and question in the same language, scored with MLQA's
per-language normalisation), zero-shot from English.

Its data, settings and run are ``qa``'s."""

import functools

from xlmp_jax.evals import qa

NAME = "mlqa"
config = functools.partial(qa.config, NAME)  # the sweep config's block
run = functools.partial(qa.run, NAME)
check = qa.check  # the sweep's check of this block, before any checkpoint is read
