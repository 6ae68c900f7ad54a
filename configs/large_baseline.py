"""large_baseline: XLM-R large without the prompt pool."""

from configs import large
from configs.common import without_pool


def get_config():
    return without_pool(large.get_config())
