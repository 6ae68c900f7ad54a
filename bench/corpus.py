"""A generated multilingual corpus of any size, in the CC-100 layout (`<lang>.txt`, a blank line between
documents), for the data benchmarks: paragraphs of the shipped sample's sentences of each language, drawn by a
counter-based hash (the same bytes on every machine), so tokens and scripts are real and the size is free.

    python -m bench.corpus --out=DIR --megabytes=1024 --languages=16
"""

from __future__ import annotations

import argparse
import hashlib
import os

from data_pipelines import sample


def _draws(seed: str):
    counter = 0
    while True:
        digest = hashlib.sha256(f"{seed}/{counter}".encode()).digest()
        counter += 1
        for i in range(0, 32, 4):
            yield int.from_bytes(digest[i : i + 4], "little")


def write_language(path: str, lang: str, megabytes: float) -> int:
    """`path`: paragraphs of 1-6 sentences of `lang`, documents of 1-8 paragraphs, up to `megabytes` MB."""
    pool = [s.encode() for s in sample.read_mono(lang, "train")]
    draw = _draws(lang)
    target, size = int(megabytes * 1e6), 0
    with open(path, "wb") as f:
        while size < target:
            doc = []
            for _ in range(1 + next(draw) % 8):
                k = 1 + next(draw) % 6
                doc.append(b" ".join(pool[next(draw) % len(pool)] for _ in range(k)))
            body = b"\n".join(doc) + b"\n\n"
            f.write(body)
            size += len(body)
    return size


_FIRST = ("en", "de", "fr", "es", "ru", "zh", "ar", "hi", "ja", "ko", "tr", "vi", "el", "he", "th", "ta")


def languages(n: int) -> list[str]:
    """`n` sample languages: sixteen large ones of many scripts (English first), then the rest in order."""
    have = sample.languages()
    langs = [x for x in _FIRST if x in have] + [x for x in have if x not in _FIRST]
    if n > len(langs):
        raise ValueError(f"--languages={n}: the sample has {len(langs)}")
    return langs[:n]


def make(out: str, megabytes: float, num_languages: int) -> list[str]:
    """The corpus in `out` (kept if already complete: a `done` marker names its size)."""
    marker = os.path.join(out, "done")
    want = f"{megabytes} {num_languages}"
    if os.path.exists(marker) and open(marker).read() == want:
        return languages(num_languages)
    os.makedirs(out, exist_ok=True)
    langs = languages(num_languages)
    for lang in langs:  # English gets a third of the corpus, like CC-100's largest languages
        share = megabytes / 3 if num_languages > 1 and lang == "en" else megabytes * 2 / 3 / max(1, num_languages - 1)
        write_language(os.path.join(out, f"{lang}.txt"), lang, share if num_languages > 1 else megabytes)
    with open(marker, "w") as f:
        f.write(want)
    return langs


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True)
    p.add_argument("--megabytes", type=float, default=1024)
    p.add_argument("--languages", type=int, default=16)
    a = p.parse_args()
    print(make(a.out, a.megabytes, a.languages))


if __name__ == "__main__":
    main()
