"""The sweep's ``tagging`` eval: zero-shot cross-lingual transfer on tagging, NER / POS style (fine-tune on English,
test every language). Its data, settings and run are ``transfer``'s, shared with the other transfer eval."""

import functools

from xlmp_jax.evals import transfer

NAME = "tagging"
config = functools.partial(transfer.config, tfds_train="wikiann", tfds_test="wikiann")  # the sweep config's block
run = functools.partial(transfer.run, NAME)
