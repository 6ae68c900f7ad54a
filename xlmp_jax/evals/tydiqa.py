"""The sweep's ``tydiqa`` eval: XTREME's TyDiQA-GoldP (gold passages; trained on its English training set),
zero-shot from English.

Its data, settings and run are ``qa``'s."""

import functools

from xlmp_jax.evals import qa

NAME = "tydiqa"
config = functools.partial(qa.config, NAME)  # the sweep config's block
run = functools.partial(qa.run, NAME)
check = qa.check  # the sweep's check of this block, before any checkpoint is read
