"""Trains an XLM-R-style SentencePiece vocabulary on a temperature-sampled mix of languages.

    python -m data_pipelines.train_vocab --out=DIR --vocab_size=8000 --character_coverage=0.9995 \
        [--languages=en,de,ru] [--alpha=0.3] [--input_glob='corpus/*.txt'] [--max_sentences=N] [--seed=0]

Sentences of language l are drawn with probability proportional to n_l^alpha (n_l = its number of lines), as
XLM-R did for its vocabulary, so low-resource languages get pieces of their own. Text comes from the shipped
sample corpus (train split only) or from `--input_glob` files (one sentence a line; the language is the file
name without extension). Lines that are not valid UTF-8 are skipped and counted. The model keeps
sentencepiece's default special ids (<unk>=0, <s>=1, </s>=2, no pad), which `XLMRVocabulary` maps to XLM-R's
layout: `--vocab_size` pieces give a vocabulary of vocab_size + 2 ids. Writes `DIR/sentencepiece.bpe.model`
(XLM-R's file name, although the model is a unigram one like XLM-R's) and `DIR/train_vocab.json` (what was used).
"""

from __future__ import annotations

import argparse
import collections
import glob
import io
import json
import os
import sys
from collections.abc import Sequence

import numpy as np
import sentencepiece as spm

from data_pipelines import sample

MODEL_NAME = "sentencepiece.bpe.model"


def read_utf8_lines(path: str, stats: collections.Counter) -> list[str]:
    """Non-empty stripped lines of a file; undecodable lines are skipped and counted in stats['skipped_non_utf8']."""
    out = []
    with open(path, "rb") as f:
        for raw in f:
            try:
                line = raw.decode("utf-8").strip()
            except UnicodeDecodeError:
                stats["skipped_non_utf8"] += 1
                continue
            if line:
                out.append(line)
    return out


def load_corpus(
    languages: Sequence[str] | None, input_glob: str | None, stats: collections.Counter
) -> dict[str, list[str]]:
    """language -> lines, from `input_glob` files or the sample corpus's train split."""
    corpus: dict[str, list[str]] = {}
    if input_glob:
        paths = sorted(glob.glob(input_glob))
        if not paths:
            raise FileNotFoundError(f"--input_glob={input_glob!r} matches no file")
        for path in paths:
            lang = os.path.basename(path).split(".")[0]
            corpus.setdefault(lang, []).extend(read_utf8_lines(path, stats))
        if languages:
            unknown = [lang for lang in languages if lang not in corpus]
            if unknown:
                raise ValueError(
                    f"languages {unknown} have no file in --input_glob={input_glob!r} (have {sorted(corpus)})"
                )
            corpus = {lang: corpus[lang] for lang in languages}
    else:
        for lang in languages or sample.languages():
            corpus[lang] = sample.split_lines(read_utf8_lines(sample.mono_path(lang), stats), "train")
    empty = [lang for lang, lines in corpus.items() if not lines]
    if empty:
        raise ValueError(f"no usable text for languages {empty}")
    return corpus


def sampling_rates(sizes: dict[str, int], alpha: float) -> dict[str, float]:
    """q_l = n_l^alpha / sum_k n_k^alpha (XLM-R / mT5 temperature sampling; alpha=1 is proportional)."""
    weights = {lang: float(n) ** alpha for lang, n in sizes.items()}
    total = sum(weights.values())
    return {lang: w / total for lang, w in weights.items()}


def sample_sentences(corpus: dict[str, list[str]], alpha: float, max_sentences: int | None, seed: int) -> list[str]:
    """Draws round(q_l * N) sentences of each language (N = min(total lines, max_sentences)); deterministic.

    A language asked for more sentences than it has contributes all of them, repeated (upsampling), as
    temperature sampling does; otherwise it contributes a random subset without repetition.
    """
    rates = sampling_rates({lang: len(lines) for lang, lines in corpus.items()}, alpha)
    total = sum(len(lines) for lines in corpus.values())
    if max_sentences:
        total = min(total, max_sentences)
    rng = np.random.default_rng(seed)
    out: list[str] = []
    for lang in sorted(corpus):
        lines, k = corpus[lang], max(1, round(rates[lang] * total))
        reps, rest = divmod(k, len(lines))
        out.extend(lines * reps)
        out.extend(lines[i] for i in sorted(rng.choice(len(lines), size=rest, replace=False)))
    order = rng.permutation(len(out))
    return [out[i] for i in order]


def train(
    out_dir: str,
    vocab_size: int = 8000,
    character_coverage: float = 0.9995,
    languages: Sequence[str] | None = None,
    alpha: float = 0.3,
    input_glob: str | None = None,
    max_sentences: int | None = None,
    model_type: str = "unigram",
    seed: int = 0,
) -> dict:
    """Trains and writes `out_dir/sentencepiece.bpe.model`; returns the summary also written to train_vocab.json."""
    if vocab_size < 4:
        raise ValueError(f"vocab_size={vocab_size} is too small (needs room for <unk>, <s>, </s> and pieces)")
    stats: collections.Counter = collections.Counter()
    corpus = load_corpus(languages, input_glob, stats)
    sentences = sample_sentences(corpus, alpha, max_sentences, seed)
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences),
        model_writer=model,
        model_type=model_type,
        vocab_size=vocab_size,
        character_coverage=character_coverage,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        input_sentence_size=0,  # use every sampled sentence; the sampling above already chose them
        shuffle_input_sentence=False,
        hard_vocab_limit=True,
        num_threads=1,  # one thread: the EM sums are then reproducible bit for bit
        minloglevel=2,
    )
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, MODEL_NAME)
    with open(path, "wb") as f:
        f.write(model.getvalue())
    pieces = spm.SentencePieceProcessor(model_proto=model.getvalue()).get_piece_size()
    if pieces != vocab_size:
        raise RuntimeError(f"sentencepiece produced {pieces} pieces, asked for {vocab_size}")
    sizes = {lang: len(lines) for lang, lines in sorted(corpus.items())}
    summary = {
        "model": path,
        "pieces": pieces,
        "xlmr_vocab_size": pieces + 2,
        "model_type": model_type,
        "character_coverage": character_coverage,
        "alpha": alpha,
        "seed": seed,
        "source": input_glob or "data_pipelines/sample (train split)",
        "lines_per_language": sizes,
        "sampling_rates": {k: round(v, 6) for k, v in sampling_rates(sizes, alpha).items()},
        "sampled_sentences": len(sentences),
        "skipped_non_utf8": stats["skipped_non_utf8"],
    }
    with open(os.path.join(out_dir, "train_vocab.json"), "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=1, ensure_ascii=False)
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--vocab_size", type=int, default=8000, help="SentencePiece pieces (XLM-R ids: +2)")
    parser.add_argument("--character_coverage", type=float, default=0.9995)
    parser.add_argument("--languages", default="", help="comma-separated; default: all available")
    parser.add_argument("--alpha", type=float, default=0.3, help="temperature exponent: rate ∝ n_l^alpha")
    parser.add_argument("--input_glob", default="", help="text files <lang>.*; default: the shipped sample")
    parser.add_argument("--max_sentences", type=int, default=0, help="0 = as many as the corpus has lines")
    parser.add_argument("--model_type", default="unigram", choices=["unigram", "bpe"])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    summary = train(
        args.out,
        vocab_size=args.vocab_size,
        character_coverage=args.character_coverage,
        languages=[x for x in args.languages.split(",") if x] or None,
        alpha=args.alpha,
        input_glob=args.input_glob or None,
        max_sentences=args.max_sentences or None,
        model_type=args.model_type,
        seed=args.seed,
    )
    print(
        f"wrote {summary['model']}: {summary['pieces']} pieces (vocab_size {summary['xlmr_vocab_size']}), "
        f"{summary['sampled_sentences']} sampled sentences from {len(summary['lines_per_language'])} languages, "
        f"{summary['skipped_non_utf8']} non-UTF-8 lines skipped"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
