"""The XLM-R vocabulary as a `seqio.Vocabulary`, with a TensorFlow path, for SeqIO tasks and tf.data preprocessors.

Apart from `data_pipelines.vocab` so that a process which only reads prepared data imports neither TensorFlow
nor SeqIO. `SeqioXLMRVocabulary` is still an `XLMRVocabulary`: same ids and Python path, and equal (with the
same hash) to a plain one of the same model, so either can stand for the other wherever ids are compared.
"""

from __future__ import annotations

import functools

import seqio
import tensorflow as tf

from data_pipelines.vocab import _OFFSET, _SPM_UNK, XLMRVocabulary


class SeqioXLMRVocabulary(XLMRVocabulary, seqio.Vocabulary):
    """`XLMRVocabulary` plus `encode_tf` / `decode_tf` (tensorflow_text's SentencePiece op, the same model bytes)."""

    _unpicklable = ("_processor", "tf_tokenizer")

    @functools.cached_property
    def tf_tokenizer(self):
        """tensorflow_text's SentencePiece op, built from the same model bytes (imported lazily: heavy)."""
        import tensorflow_text as tf_text

        return tf_text.SentencepieceTokenizer(model=self._model_bytes, out_type=tf.int32)

    def _encode_tf(self, s: tf.Tensor) -> tf.Tensor | tf.RaggedTensor:
        ids = self.tf_tokenizer.tokenize(s)

        def remap(p: tf.Tensor) -> tf.Tensor:
            small = tf.gather(tf.constant([self.unk_id, self.bos_id, self.eos_id], tf.int32), tf.minimum(p, 2))
            return tf.where(p >= 3, p + _OFFSET, small)

        if isinstance(ids, tf.RaggedTensor):
            return tf.ragged.map_flat_values(remap, ids)
        return remap(ids)

    def _decode_tf(self, ids: tf.Tensor) -> tf.Tensor:
        if not isinstance(ids, tf.RaggedTensor):
            ids = tf.convert_to_tensor(ids, tf.int32)
        keep = tf.ones_like(ids, tf.bool)
        for special in sorted(self.special_ids):
            keep = tf.logical_and(keep, tf.not_equal(ids, special))
        pieces = tf.where(tf.equal(ids, self.unk_id), _SPM_UNK, ids - _OFFSET)
        # 1-D: a plain boolean mask; batches become ragged rows of different lengths.
        pieces = tf.boolean_mask(pieces, keep) if ids.shape.rank == 1 else tf.ragged.boolean_mask(pieces, keep)
        return self.tf_tokenizer.detokenize(pieces)
