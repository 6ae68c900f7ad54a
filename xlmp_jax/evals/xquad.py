"""The sweep's ``xquad`` eval: XTREME's XQuAD (SQuAD v1.1 dev paragraphs and their translations into ten
languages), zero-shot from English.

Its data, settings and run are ``qa``'s."""

import functools

from xlmp_jax.evals import qa

NAME = "xquad"
config = functools.partial(qa.config, NAME)  # the sweep config's block
run = functools.partial(qa.run, NAME)
check = qa.check  # the sweep's check of this block, before any checkpoint is read
