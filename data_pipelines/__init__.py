"""Multilingual data for XLM-P: the XLM-R vocabulary, the shipped sample corpus and the SeqIO input pipelines.

Kept import-light on purpose: submodules pull in TensorFlow/SeqIO only when they are imported themselves.
"""
