"""base_baseline: XLM-R base without the prompt pool."""

from configs import base
from configs.common import without_pool


def get_config():
    return without_pool(base.get_config())
