"""XLM-R vocabulary: a SentencePiece model seen through fairseq's id layout.

XLM-R's checkpoints (and `transformers`' XLMRobertaTokenizer) do not use SentencePiece ids directly:
fairseq puts `<s>`=0, `<pad>`=1, `</s>`=2, `<unk>`=3 first, shifts every real piece by one (SentencePiece id
p >= 3 becomes p + 1) and appends `<mask>` as the last id. Using the same layout here means a model trained
with this vocabulary exports to a HF checkpoint whose tokenizer is XLM-R's, unchanged, and that XLM-R's own
`sentencepiece.bpe.model` (250000 pieces -> vocab_size 250002) can be used as is.

Plain Python (SentencePiece's own processor), so training and evaluation import neither TensorFlow nor SeqIO.
"""

from __future__ import annotations

import functools
import hashlib
import os
from collections.abc import Iterable

import sentencepiece as spm

SAMPLE_VOCAB_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "sample_vocab", "sentencepiece.bpe.model")

# SentencePiece ids that XLM-R's model reserves (sentencepiece's defaults): <unk>=0, <s>=1, </s>=2.
_SPM_UNK, _SPM_BOS, _SPM_EOS = 0, 1, 2
# Fairseq's shift of the real pieces (`fairseq_offset` in transformers' XLMRobertaTokenizer).
_OFFSET = 1


def _read_model(path: str) -> bytes:
    """The model file's bytes: plain `open` on a local disk, `etils.epath` for gs:// and other URLs."""
    if "://" in path:
        from etils import epath

        remote = epath.Path(path)
        if not remote.exists():
            raise FileNotFoundError(f"SentencePiece model not found: {path!r}")
        return remote.read_bytes()
    if not os.path.exists(path):
        raise FileNotFoundError(f"SentencePiece model not found: {path!r}")
    with open(path, "rb") as f:
        return f.read()


class XLMRVocabulary:
    """SentencePiece model with XLM-R's ids; `encode` adds no specials, `encode_with_specials` adds <s> ... </s>.

    `decode` (seqio semantics) stops at the first `</s>` and drops the special tokens `<s>`, `<pad>`, `</s>`,
    `<mask>` (like HF's `skip_special_tokens=True`); `<unk>` decodes to SentencePiece's unk surface (" ⁇ ").
    """

    bos_id_value = 0
    pad_id_value = 1
    eos_id_value = 2
    unk_id_value = 3
    _unpicklable: tuple[str, ...] = ("_processor",)  # rebuilt from the model bytes by `__setstate__`

    def __init__(self, spm_model_path: str):
        self.spm_model_path = str(spm_model_path)
        self._model_bytes: bytes = _read_model(self.spm_model_path)
        try:
            processor = spm.SentencePieceProcessor(model_proto=self._model_bytes)
        except Exception as e:  # sentencepiece raises RuntimeError/OSError depending on the failure.
            raise ValueError(f"{self.spm_model_path!r} is not a valid SentencePiece model: {e}") from e
        layout = (processor.unk_id(), processor.bos_id(), processor.eos_id())
        if layout != (_SPM_UNK, _SPM_BOS, _SPM_EOS):
            raise ValueError(
                f"{self.spm_model_path!r} has SentencePiece (unk, bos, eos) ids {layout}; XLM-R's layout needs "
                f"{(_SPM_UNK, _SPM_BOS, _SPM_EOS)} (train with sentencepiece's defaults, pad_id=-1)"
            )
        self._num_pieces: int = processor.get_piece_size()
        self._processor = processor

    # ----- ids -------------------------------------------------------------------------------------------------
    @property
    def bos_id(self) -> int:
        return self.bos_id_value

    @property
    def pad_id(self) -> int:
        return self.pad_id_value

    @property
    def eos_id(self) -> int:
        return self.eos_id_value

    @property
    def unk_id(self) -> int:
        return self.unk_id_value

    @property
    def mask_id(self) -> int:
        return self.vocab_size - 1

    @property
    def special_ids(self) -> frozenset[int]:
        """Ids that carry no text: <s>, <pad>, </s>, <mask> (not <unk>, which stands for real text)."""
        return frozenset({self.bos_id, self.pad_id, self.eos_id, self.mask_id})

    @property
    def num_pieces(self) -> int:
        """Number of pieces in the SentencePiece model (vocab_size - 2)."""
        return self._num_pieces

    @property
    def _base_vocab_size(self) -> int:
        # <pad> is the one id fairseq adds before the shifted pieces, <mask> the one after them.
        return self._num_pieces + _OFFSET + 1

    @property
    def vocab_size(self) -> int:
        return self._base_vocab_size

    def id_to_piece(self, i: int) -> str:
        """The token string of XLM-R id `i` (specials by name), e.g. for inspecting masked positions."""
        names = {self.bos_id: "<s>", self.pad_id: "<pad>", self.eos_id: "</s>", self.unk_id: "<unk>"}
        if i in names:
            return names[i]
        if i == self.mask_id:
            return "<mask>"
        if not 0 <= i < self.vocab_size:
            raise ValueError(f"token id {i} is outside the vocabulary (size {self.vocab_size})")
        return self._processor.id_to_piece(i - _OFFSET)

    # ----- Python path -----------------------------------------------------------------------------------------
    def _spm_to_xlmr(self, p: int) -> int:
        if p >= 3:
            return p + _OFFSET
        return (self.unk_id, self.bos_id, self.eos_id)[p]

    def _encode(self, s: str) -> list[int]:
        if isinstance(s, bytes):
            s = s.decode("utf-8")
        return [self._spm_to_xlmr(p) for p in self._processor.encode(s, out_type=int)]

    def encode(self, s: str) -> list[int]:
        """Token ids of `s`, without <s>/</s>."""
        return self._encode(s)

    def encode_with_specials(self, s: str) -> list[int]:
        """`[<s>] + encode(s) + [</s>]`, as XLM-R's tokenizer produces for one sentence."""
        return [self.bos_id, *self._encode(s), self.eos_id]

    def _decode(self, ids: Iterable[int]) -> str:
        pieces: list[int] = []
        specials = self.special_ids
        for i in ids:
            i = int(i)
            if i in specials:
                continue
            pieces.append(_SPM_UNK if i == self.unk_id else i - _OFFSET)
        return self._processor.decode(pieces)

    def decode(self, ids: Iterable[int]) -> str:
        """Text of `ids` through the first `</s>`; ids past the vocabulary read as `<unk>` (as seqio decodes)."""
        if hasattr(ids, "numpy"):  # an eager tensor: converted once, not element by element
            ids = ids.numpy()
        clean = [self.unk_id if int(i) >= self._base_vocab_size else int(i) for i in ids]
        if self.eos_id in clean:
            clean = clean[: clean.index(self.eos_id) + 1]
        return self._decode(clean)

    # ----- identity (SeqIO compares output features' vocabularies across the tasks of a mixture) ---------------
    @functools.cached_property
    def _fingerprint(self) -> str:
        return hashlib.sha256(self._model_bytes).hexdigest()

    def __eq__(self, other: object) -> bool:
        return isinstance(other, XLMRVocabulary) and self._fingerprint == other._fingerprint

    def __hash__(self) -> int:
        return hash(self._fingerprint)

    def __getstate__(self) -> dict:
        # SentencePiece / TF ops do not pickle; the model bytes are enough to rebuild them.
        return {k: v for k, v in self.__dict__.items() if k not in self._unpicklable}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._processor = spm.SentencePieceProcessor(model_proto=self._model_bytes)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.spm_model_path!r}, vocab_size={self.vocab_size})"
