"""The shipped sample corpus: languages, scripts, parallel sizes, clean UTF-8, provenance, the split rule."""

import collections
import os
import unicodedata

import pytest

from data_pipelines import sample

ALIASES = {"CJK": "HAN", "HIRAGANA": "KANA", "KATAKANA": "KANA"}


def dominant_script(text: str) -> str:
    counts = collections.Counter()
    for ch in text:
        if unicodedata.category(ch).startswith("L"):
            first = unicodedata.name(ch, "?").split()[0]
            counts[ALIASES.get(first, first)] += 1
    return counts.most_common(1)[0][0]


def all_files():
    files = [os.path.relpath(sample.mono_path(lang), sample.SAMPLE_DIR) for lang in sample.languages()]
    files += [os.path.relpath(sample.parallel_path(lang), sample.SAMPLE_DIR) for lang in sample.parallel_languages()]
    return files


def test_at_least_15_languages_and_8_scripts():
    langs = sample.languages()
    assert len(langs) >= 15
    scripts = {lang: dominant_script("".join(sample.read_mono(lang)[:200])) for lang in langs}
    distinct = set(scripts.values())
    assert len(distinct) >= 8, distinct
    for needed in ("LATIN", "CYRILLIC", "GREEK", "ARABIC", "HEBREW", "DEVANAGARI", "HAN", "HANGUL", "THAI"):
        assert needed in distinct, needed
    assert scripts["ru"] == "CYRILLIC" and scripts["el"] == "GREEK" and scripts["zh"] == "HAN"
    assert scripts["ko"] == "HANGUL" and scripts["th"] == "THAI" and scripts["hi"] == "DEVANAGARI"
    # Low-resource languages are in too.
    assert {"cy", "eu", "ga", "sw", "am", "xh"} <= set(langs)


def test_mono_files_are_clean_utf8_without_empty_lines():
    for lang in sample.languages():
        raw = open(sample.mono_path(lang), "rb").read()
        text = raw.decode("utf-8")  # raises on invalid UTF-8
        lines = text.split("\n")
        assert lines[-1] == "", f"{lang}: missing final newline"
        lines = lines[:-1]
        assert len(lines) >= 150, (lang, len(lines))
        assert all(line.strip() == line and line for line in lines), lang
        assert len(set(lines)) == len(lines), f"{lang}: duplicate lines"
        assert "\t" not in text and "\r" not in text


def test_parallel_sets():
    langs = sample.parallel_languages()
    assert len(langs) >= 10
    for lang in langs:
        pairs = sample.read_parallel(lang)
        assert len(pairs) >= 200, (lang, len(pairs))
        assert all(en and other and en != other for en, other in pairs), lang
        assert dominant_script("".join(en for en, _ in pairs[:100])) == "LATIN"
    scripts = {dominant_script("".join(o for _, o in sample.read_parallel(lang)[:100])) for lang in langs}
    assert len(scripts) >= 6, scripts


def test_provenance_lists_every_file():
    text = open(os.path.join(sample.SAMPLE_DIR, "PROVENANCE.md"), encoding="utf-8").read()
    for rel in all_files():
        assert f"`{rel}`" in text, rel
    assert "licence" in text.lower()


def test_split_lines_rule():
    lines = [f"l{i}" for i in range(25)]
    assert sample.split_lines(lines, "validation") == ["l22", "l23", "l24"]  # ceil(10 % of 25) = 3
    assert sample.split_lines(lines, "train") == lines[:22]
    assert sample.split_lines(lines[:10], "validation") == ["l9"]
    assert sample.split_lines(lines[:1], "validation") == ["l0"] and sample.split_lines(lines[:1], "train") == []
    for lang in ("en", "de", "zh"):
        full = sample.read_mono(lang)
        train, val = sample.read_mono(lang, "train"), sample.read_mono(lang, "validation")
        assert val == full[len(full) - len(val) :] and len(val) == -(-len(full) // 10)
        assert train == sample.leak_free(full[: len(full) - len(val)])  # the positional train lines, filtered
    with pytest.raises(ValueError, match="'test'"):
        sample.split_lines(lines, "test")


def test_unknown_language_is_named():
    with pytest.raises(ValueError, match="'xx'"):
        sample.mono_path("xx")
    with pytest.raises(ValueError, match="'xx'"):
        sample.parallel_path("xx")


# ---------------------------------------------------------------------------------------------------------------
# leakage-free splits
# ---------------------------------------------------------------------------------------------------------------
def test_normalize_ignores_case_width_whitespace_and_punctuation():
    same = ["Open the file.", "  open THE file ", "Open, the file!", "ｏｐｅｎ\tthe   «file»", "OPEN THE FILE..."]
    assert {sample.normalize(s) for s in same} == {"open the file"}
    assert sample.normalize("Datei öffnen") == sample.normalize("DATEI ÖFFNEN!")
    assert sample.normalize("打开文件。") == sample.normalize("打开文件")  # full-width punctuation
    assert sample.normalize("Open the files") != sample.normalize("Open the file")
    assert sample.normalize("...") == ""


def test_leak_free_catches_a_variant_of_an_eval_sentence():
    val = sample.read_mono("de", "validation")[0]
    pair_en, pair_other = sample.read_parallel("fr", "validation")[0]
    variants = [f"  {val.upper()} !", pair_en.lower() + ".", f"« {pair_other} »"]
    assert sample.leak_free([*variants, "a sentence no catalog has"]) == ["a sentence no catalog has"]


def test_pair_split_follows_the_english_side():
    assert sample.is_eval_pair("Open the file.") == sample.is_eval_pair("open the FILE")  # normalised English
    pairs = sample.read_parallel("de")
    held = sample.split_pairs(pairs, "validation")
    assert sample.split_pairs(list(reversed(pairs)), "validation") == list(reversed(held))  # not positional
    assert set(held).isdisjoint(sample.split_pairs(pairs, "train"))
    de = {sample.normalize(en) for en, _ in held}
    fr_train = {sample.normalize(en) for en, _ in sample.read_parallel("fr", "train")}
    assert de.isdisjoint(fr_train)  # an English sentence held out in one language is held out in all


def test_splits_are_deterministic_and_non_empty():
    for lang in sample.languages():
        train, val = sample.read_mono(lang, "train"), sample.read_mono(lang, "validation")
        assert train and val, lang
        # the filter drops few lines (up to ~20 % in ta: the transfer task's dev and test strings are held out too)
        assert len(train) >= 0.75 * (len(sample.read_mono(lang)) - len(val)), lang
    for lang in sample.parallel_languages():
        train, val = sample.read_parallel(lang, "train"), sample.read_parallel(lang, "validation")
        n = len(sample.read_parallel(lang))
        assert 0.15 * n < len(val) < 0.35 * n and len(train) > 0.6 * n, (lang, len(train), len(val))
        assert sample.read_parallel(lang, "train") == train and sample.read_parallel(lang, "validation") == val
    first = sample.read_mono("zh", "train")
    sample._eval_sentences.cache_clear()
    assert sample.read_mono("zh", "train") == first


def _normalised(lines) -> set[str]:
    return {n for n in map(sample.normalize, lines) if n}


def test_zero_overlap_between_evaluation_and_training_on_the_shipped_sample():
    """What every consumer reads: the lines the prepare packs (`line_sources`), the retrieval pairs, the
    fine-tune data."""
    import ml_collections

    from data_pipelines import line_sources
    from data_pipelines.config import DataConfig, default_data_config
    from xlmp_jax.evals import package, retrieval, transfer

    cfg = default_data_config()
    cfg.tlm_rate = 0.5  # every sample language and every sample pair
    train: set[str] = set()
    evals: dict[str, set[str]] = collections.defaultdict(set)
    inputs = line_sources.inputs(DataConfig.from_section(cfg))
    assert {i.entry for i in inputs} == set(sample.languages()) | {f"en-{p}" for p in sample.parallel_languages()}
    for inp in inputs:
        texts = [line.decode("utf-8") for _, line in line_sources.read_lines(inp)]
        if inp.kind == "pairs":
            texts = [side for text in texts for side in text.split("\t")]
        if inp.split == "train":
            train |= _normalised(texts)
        else:
            evals[inp.entry.removeprefix("en-")] |= _normalised(texts)
    settings = ml_collections.ConfigDict(dict(tsv="", tsv_dir="", languages="", max_pairs=0))
    for lang, (english, other) in retrieval.retrieval_pairs(settings).items():
        evals[lang] |= _normalised(english) | _normalised(other)
    ft = ml_collections.ConfigDict(
        dict(source="sample", languages="", max_train=0, max_test=0, local_dir="", data_dir="")
    )
    for kind in ("classification", "tagging"):
        ft_train, ft_tests = transfer.finetune_data(kind, ft, 0)
        train |= _normalised(ex.texts[0] if kind == "classification" else " ".join(ex.texts) for ex in ft_train)
        for lang, examples in ft_tests.items():
            evals[lang] |= _normalised(
                ex.texts[0] if kind == "classification" else " ".join(ex.texts) for ex in examples
            )
    task = package.task_data(package.config())  # the transfer task: English train; dev and every language's test
    train |= _normalised(ex.texts[0] for ex in task.train)
    evals["en"] |= _normalised(ex.texts[0] for ex in task.dev)
    for lang, examples in task.tests.items():
        evals[lang] |= _normalised(ex.texts[0] for ex in examples)
    assert len(train) > 30_000 and sum(map(len, evals.values())) > 5_000  # the sets are the real ones
    overlap = {lang: len(e & train) for lang, e in evals.items() if e & train}
    assert overlap == {}, overlap


# ------------------------------------------------------------------------------------------- the transfer task


def test_transfer_task_is_split_by_english_source():
    every = sample.read_transfer()
    assert 1000 <= len(every) <= 3000 and len({it.label for it in every}) >= 4
    splits = {s: sample.read_transfer(s) for s in sample.TRANSFER_SPLITS}
    english = {s: {sample.normalize(it.english) for it in items} for s, items in splits.items()}
    assert english["train"].isdisjoint(english["dev"] | english["test"]) and english["dev"].isdisjoint(english["test"])
    assert all(len(items) > 150 for items in splits.values()), {s: len(v) for s, v in splits.items()}
    assert sample.transfer_split("Open the file.") == sample.transfer_split("  open THE file")
    where = {s: {it.english: it for it in items} for s, items in splits.items()}
    for it in every:  # a string and all its translations sit in its English string's split (train may drop it)
        found = [s for s in sample.TRANSFER_SPLITS if it.english in where[s]]
        assert found in ([sample.transfer_split(it.english)], []), (it.english, found)
        assert not found or where[found[0]][it.english].translations == it.translations
    assert len(splits["train"]) > 0.7 * sum(sample.transfer_split(it.english) == "train" for it in every)
    translated = {lang for it in every for lang in it.translations}
    assert translated == set(sample.parallel_languages())


def test_transfer_dev_and_test_texts_are_held_out_of_every_training_split():
    held = sample.eval_sentences()
    dev_test = [it for s in ("dev", "test") for it in sample.read_transfer(s)]
    texts = {sample.normalize(t) for it in dev_test for t in (it.english, *it.translations.values())} - {""}
    assert texts <= held  # every language's dev and test string is an evaluation sentence
    train: set[str] = set()
    for lang in sample.languages():
        train |= _normalised(sample.read_mono(lang, "train"))
    for lang in sample.parallel_languages():
        train |= _normalised(side for pair in sample.read_parallel(lang, "train") for side in pair)
    train |= _normalised(it.english for it in sample.read_transfer("train"))
    assert train.isdisjoint(texts)
    raw_train = {sample.normalize(line) for lang in sample.languages() for line in sample.split_lines(
        sample.read_mono(lang), "train")}  # fmt: skip
    assert raw_train & texts  # the rule does remove lines: without it they would leak


def test_transfer_file_errors_name_the_line(tmp_path, monkeypatch):
    (tmp_path / "transfer").mkdir()
    (tmp_path / "transfer" / "packages.tsv").write_text("label\ten\tde\nmedia\tPlay the song now\n")
    monkeypatch.setattr(sample, "SAMPLE_DIR", str(tmp_path))
    with pytest.raises(ValueError, match=r"packages.tsv:2: expected 3 cells"):
        sample.read_transfer()
    with pytest.raises(ValueError, match="unknown transfer split"):
        sample.read_transfer("validation")


def test_a_new_transfer_file_moves_the_sample_inputs_fingerprint(tmp_path, monkeypatch):
    """The held-out rule reads the transfer file, so a prepared cache of the sample must not outlive it."""
    from data_pipelines import line_sources

    for folder in ("mono", "parallel"):
        (tmp_path / folder).mkdir()
    (tmp_path / "mono" / "de.txt").write_text("Eine Zeile Text hier\n")
    monkeypatch.setattr(sample, "SAMPLE_DIR", str(tmp_path))
    inp = line_sources.Input("de", "train", "lines", "sample", ("de",))
    before = line_sources.fingerprint(inp)
    (tmp_path / "transfer").mkdir()
    (tmp_path / "transfer" / "packages.tsv").write_text("label\ten\tde\nmedia\tPlay the song now\tLied abspielen\n")
    assert line_sources.fingerprint(inp) != before
