"""tiny_baseline: the tiny config without the prompt pool (a plain tiny XLM-R)."""

from configs import tiny
from configs.common import without_pool


def get_config():
    return without_pool(tiny.get_config())
