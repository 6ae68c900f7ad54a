"""The sweep's ``pos`` eval: XTREME's UD-POS, zero-shot (fine-tune on English, tag every language's test set).

A tagging eval (``transfer``'s data, settings and run) whose defaults read TFDS's ``xtreme_pos`` (UD v2.5,
configs ``xtreme_pos_<lang>``, UPOS tags); ``local_dir`` with ``train.conllu`` + ``test-<lang>.conllu`` reads
Universal Dependencies files instead (``transfer_data.read_conllu``). Scored by tag accuracy.
"""

import functools

from xlmp_jax.evals import transfer

NAME = "pos"
config = functools.partial(  # the sweep config's block; xtreme_pos names its dev split "dev"
    transfer.config, tfds_train="xtreme_pos", tfds_test="xtreme_pos", tfds_dev_split="dev"
)
run = functools.partial(transfer.run, "tagging", name=NAME)
