"""The sweep's ``classification`` eval: zero-shot cross-lingual transfer on sentence(-pair) classification, XNLI / PAWS-X style (fine-tune on English,
test every language). Its data, settings and run are ``transfer``'s, shared with the other transfer eval."""

import functools

from xlmp_jax.evals import transfer

NAME = "classification"
config = functools.partial(transfer.config, tfds_train="xtreme_xnli", tfds_test="xnli")  # the sweep config's block
run = functools.partial(transfer.run, NAME)
