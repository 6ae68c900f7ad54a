"""Run configs (ml_collections): one ``get_config()`` a file; see configs/common.py."""
