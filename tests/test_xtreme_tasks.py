"""XTREME's retrieval and structured-prediction tasks: BUCC mining (``evals.mining``, ``evals.bucc``) and
Tatoeba (``evals.tatoeba``) on hand-computed fixtures, UD-POS from CoNLL-U and TFDS (``transfer_data``,
``evals.pos``), our NER span F1 against seqeval's, and the three evals run by the sweep on a tiny model."""

from __future__ import annotations

import functools
import itertools

import jax
import ml_collections
import numpy as np
import pytest
from test_evaluate import FakeCheckpoints, small_config, sweep_config

from xlmp_jax import evaluate
from xlmp_jax.evals import bucc, finetune, mining, tatoeba, transfer, transfer_data
from xlmp_jax.evals.results import ResultStore
from xlmp_jax.hf.encoder import resolve_layer, xtreme_layer

# ------------------------------------------------------------------------------- a hand-computed BUCC set
#
# Cosines between 3 source and 3 English sentences, scaled by 0.5 (the ratio margin is scale-free):
#        y0    y1    y2
#  x0   0.9   0.8   0.1
#  x1   0.85  0.6   0.2
#  x2   0.1   0.2   0.5
# k = 2: forward means (top 2 of each row) 0.85, 0.725, 0.35; backward means (of each column) 0.875, 0.7, 0.35.
# margin(i, j) = cos / ((fwd[i] + bwd[j]) / 2), over each sentence's 2 nearest neighbours:
#   x0: y0 0.9/0.8625 = 1.04348, y1 0.8/0.775 = 1.03226      -> y0
#   x1: y0 0.85/0.8 = 1.0625,    y1 0.6/0.7125 = 0.84211     -> y0
#   x2: y2 0.5/0.35 = 1.42857,   y1 0.2/0.525 = 0.38095      -> y2
#   y0: x0 1.04348, x1 1.0625 -> x1;  y1: x0 1.03226, x1 0.84211 -> x0;  y2: x2 1.42857, x1 0.2/0.5375 -> x2
# forward {x0y0, x1y0, x2y2}; backward {x1y0, x0y1, x2y2}; intersection {x1y0, x2y2};
# max (greedy one-to-one, best first): x2y2 1.42857, x1y0 1.0625, (x0y0 blocked: y0 taken), x0y1 1.03226.

COS = 0.5 * np.array([[0.9, 0.8, 0.1], [0.85, 0.6, 0.2], [0.1, 0.2, 0.5]])
S22, S10, S00, S01 = 0.5 / 0.35, 0.85 / 0.8, 0.9 / 0.8625, 0.8 / 0.775


def realise(cos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors with exactly these cosines: sources = basis vectors, targets = columns + a filler axis."""
    n = cos.shape[0]
    source = np.eye(n + 1)[:n]
    target = np.concatenate([cos.T, np.sqrt(1 - (cos**2).sum(axis=0))[:, None]], axis=1)
    return source, target


def test_ratio_margin_candidates_hand_computed():
    source, target = realise(COS)
    np.testing.assert_allclose(mining.unit_rows(source) @ mining.unit_rows(target).T, COS, atol=1e-7)
    expected = {
        "forward": {(0, 0): S00, (1, 0): S10, (2, 2): S22},
        "backward": {(1, 0): S10, (0, 1): S01, (2, 2): S22},
        "intersection": {(1, 0): S10, (2, 2): S22},
        "max": {(2, 2): S22, (1, 0): S10, (0, 1): S01},
    }
    for mode, pairs in expected.items():
        got = mining.mine(source, target, k=2, mode=mode)
        assert set(got) == set(pairs), mode
        for pair, score in pairs.items():
            assert got[pair] == pytest.approx(score, rel=1e-5), (mode, pair)
    # k larger than a side is capped at its size (XTREME's min(k, n)): k=3 = every sentence's neighbourhood.
    assert set(mining.mine(source, target, k=9, mode="intersection")) <= {(0, 0), (1, 0), (2, 2), (0, 1)}
    with pytest.raises(ValueError, match="mining mode 'both'"):
        mining.mine(source, target, mode="both")


def test_threshold_on_gold_and_f1_hand_computed():
    candidates = {(2, 2): S22, (1, 0): S10, (0, 1): S01}
    # Gold {x2y2, x1y0}: F1 after each score: 2/3, 1 (best), 0.8 -> cut halfway between 1.0625 and 1.03226.
    threshold, f1 = mining.best_threshold(candidates, {(2, 2), (1, 0)})
    assert threshold == pytest.approx((S10 + S01) / 2) and f1 == 1.0
    # Applied to gold {x2y2, x0y1}: keeps x2y2 (right) and x1y0 (wrong): P = R = F1 = 1/2.
    assert mining.prf(candidates, {(2, 2), (0, 1)}, threshold) == pytest.approx((0.5, 0.5, 0.5))
    # That gold's own best cut keeps all three: P = 2/3, R = 1, F1 = 0.8.
    assert mining.best_threshold(candidates, {(2, 2), (0, 1)}) == pytest.approx((S01, 0.8))
    # Tied scores are kept or dropped together (both 1.0s: P = 1/2, R = 1, F1 = 2/3); nothing right: nothing kept.
    assert mining.best_threshold({(0, 0): 1.0, (1, 1): 1.0, (2, 2): 0.5}, {(0, 0)}) == (0.75, pytest.approx(2 / 3))
    assert mining.best_threshold({(0, 0): 1.0}, {(1, 1)}) == (float("inf"), 0.0)
    assert mining.prf({(0, 0): 1.0}, {(0, 0)}, float("inf")) == (0.0, 0.0, 0.0)


def test_blocked_knn_equals_the_full_matrix():
    rng = np.random.default_rng(0)
    queries, base = rng.normal(size=(50, 16)), rng.normal(size=(37, 16))
    sims, idx = mining.knn(queries, base, 4, block=8)  # 50 = 6 full blocks + a padded one
    full = mining.unit_rows(queries) @ mining.unit_rows(base).T
    np.testing.assert_array_equal(idx, np.argsort(-full, axis=1)[:, :4])
    np.testing.assert_allclose(sims, np.sort(full, axis=1)[:, ::-1][:, :4], atol=1e-5)
    with pytest.raises(ValueError, match=r"k=38 .* <= 37"):
        mining.knn(queries, base, 38)


# ------------------------------------------------------------------------------------------ BUCC files


class TableEncoder:
    """A stand-in encoder whose embedding of each text is looked up in a table (for exact fixtures)."""

    def __init__(self, table: dict[str, np.ndarray]):
        self.table, self.layers = table, []

    def embed_texts(self, tokenizer, texts, layer="middle"):
        self.layers.append(layer)
        return {"embedding": np.stack([self.table[t] for t in texts])}


def write_bucc_split(folder, split: str, ids: tuple[str, str], gold: list[tuple[int, int]], lang: str = "de"):
    """Sentences s0..s2 / e0..e2 with ids ``<ids[0]>0..`` / ``<ids[1]>0..``; gold pairs by index."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{lang}-en.{split}.{lang}").write_text("".join(f"{ids[0]}{i}\ts{i}\n" for i in range(3)), "utf-8")
    (folder / f"{lang}-en.{split}.en").write_text("".join(f"{ids[1]}{i}\te{i}\n" for i in range(3)), "utf-8")
    (folder / f"{lang}-en.{split}.gold").write_text("".join(f"{ids[0]}{i}\t{ids[1]}{j}\n" for i, j in gold), "utf-8")


def bucc_settings(directory, **overrides) -> ml_collections.ConfigDict:
    settings = bucc.config()
    settings.update(dict(dir=str(directory), k=2, **overrides))
    return settings


def test_bucc_threshold_from_sample_gold_f1_on_training(tmp_path):
    """The hand-computed set as files: sample gold {x2y2, x1y0}, training gold {x2y2, x0y1} (same texts)."""
    source, target = realise(COS)
    table = {f"s{i}": source[i] for i in range(3)} | {f"e{j}": target[j] for j in range(3)}
    write_bucc_split(tmp_path / "de-en", "sample", ("de-00000", "en-00000"), [(2, 2), (1, 0)])
    write_bucc_split(tmp_path, "training", ("de-10000", "en-10000"), [(2, 2), (0, 1)])  # flat layout
    encoder = TableEncoder(table)
    rows = {(lang, metric): v for lang, metric, v in bucc.bucc_eval(encoder, None, bucc_settings(tmp_path), ["de"])}
    assert rows[("de", "threshold")] == pytest.approx((S10 + S01) / 2)
    assert rows[("de", "f1_sample")] == 1.0
    assert (rows[("de", "precision")], rows[("de", "recall")], rows[("de", "f1")]) == pytest.approx((0.5, 0.5, 0.5))
    assert rows[("de", "f1_own_threshold")] == pytest.approx(0.8)
    assert (rows[("de", "gold_pairs")], rows[("de", "candidates")]) == (2.0, 3.0)
    assert rows[("all", "f1")] == pytest.approx(0.5)
    assert set(encoder.layers) == {"xtreme"}  # XTREME's layer by default
    assert bucc.languages_found(str(tmp_path), "sample") == ["de"]
    # Forward candidates instead: x0y0 (wrong on sample) scores between the two right ones.
    forward = bucc.bucc_eval(TableEncoder(table), None, bucc_settings(tmp_path, mode="forward"), ["de"])
    assert dict(((m, v) for lang, m, v in forward if lang == "de"))["threshold"] == pytest.approx((S10 + S00) / 2)


def test_bucc_texts_with_several_ids_map_to_none():
    texts, owners = bucc.unique_texts(["a1", "a2", "a3"], ["same", "other", "same"])
    assert (texts, owners) == (["same", "other"], [None, "a2"])
    source, target = realise(COS)
    pairs = bucc.mined_pairs(source, target, ["x0", "x1", None], ["y0", "y1", "y2"], k=2, mode="max")
    assert set(pairs) == {("x1", "y0"), ("x0", "y1")}  # x2y2 mined, but x2's text has several ids


def test_bucc_bad_inputs_name_the_file_and_line(tmp_path):
    write_bucc_split(tmp_path, "sample", ("de-0", "en-0"), [(0, 0)])
    settings = bucc_settings(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"de-en\.training: no de-en\.training\.de in"):
        bucc.bucc_eval(TableEncoder({}), None, settings, ["de"])
    with pytest.raises(FileNotFoundError, match=r"fr-en\.sample"):
        bucc.bucc_eval(TableEncoder({}), None, settings, ["fr"])
    (tmp_path / "de-en.sample.gold").unlink()
    with pytest.raises(FileNotFoundError, match=r"de-en\.sample\.gold' does not exist"):
        bucc.split_files(str(tmp_path), "de", "sample")
    gold = tmp_path / "de-en.sample.gold"
    gold.write_text("de-00\ten-00\nde-01 en-01\n", "utf-8")
    with pytest.raises(ValueError, match=r"de-en\.sample\.gold:2: expected 'xx_id<TAB>en_id', got 1 field"):
        bucc.read_gold(str(gold), ["de-00", "de-01"], ["en-00", "en-01"])
    gold.write_text("de-00\ten-07\n", "utf-8")
    with pytest.raises(ValueError, match=r"gold:1: id 'en-07' is not in the English sentence file"):
        bucc.read_gold(str(gold), ["de-00"], ["en-00"])
    sentences = tmp_path / "de-en.sample.de"
    sentences.write_text("de-00\tHallo\nde-01\n", "utf-8")
    with pytest.raises(ValueError, match=r"de-en\.sample\.de:2: expected 'id<TAB>sentence'"):
        bucc.read_sentences(str(sentences))
    sentences.write_text("de-00\tHallo\nde-00\tWelt\n", "utf-8")
    with pytest.raises(ValueError, match=r"de-en\.sample\.de:2: id 'de-00' appears twice"):
        bucc.read_sentences(str(sentences))
    with pytest.raises(ValueError, match="bucc.mode='both'"):
        bucc.bucc_eval(TableEncoder({}), None, bucc_settings(tmp_path, mode="both"), ["de"])


# ----------------------------------------------------------------------------------------------- Tatoeba

# English e0..e3 = basis vectors; the other side x0 = e0, x1 = e1, x2 = e3 (wrong), x3 = e3 + 0.5 e2.
# xx -> en: x0 e0, x1 e1, x2 e3 (gold e2: wrong), x3 e3 (cos 0.894 vs e2's 0.447): 3/4.
# en -> xx: e0 x0, e1 x1, e2 x3 (0.447 vs x2's 0: wrong), e3 x2 (1 vs x3's 0.894: wrong): 2/4.
TATOEBA_TABLE = {f"en {i}": np.eye(4)[i] for i in range(4)} | {
    "xx 0": np.eye(4)[0],
    "xx 1": np.eye(4)[1],
    "xx 2": np.eye(4)[3],
    "xx 3": np.eye(4)[3] + 0.5 * np.eye(4)[2],
}


def test_tatoeba_accuracy_both_directions_from_laser_files(tmp_path):
    (tmp_path / "tatoeba.deu-eng.deu").write_text("".join(f"xx {i}\n" for i in range(4)), "utf-8")
    (tmp_path / "tatoeba.deu-eng.eng").write_text("".join(f"en {i}\n" for i in range(4)), "utf-8")
    (tmp_path / "tatoeba.fr-eng.fr").write_text("xx 0\nxx 1\n", "utf-8")  # XTREME's renamed two-letter files
    (tmp_path / "tatoeba.fr-eng.eng").write_text("en 0\nen 1\n", "utf-8")
    settings = tatoeba.config()
    settings.dir = str(tmp_path)
    pairs = tatoeba.tatoeba_pairs(settings)
    assert sorted(pairs) == ["de", "fr"] and pairs["fr"] == (["en 0", "en 1"], ["xx 0", "xx 1"])
    ctx = type("Ctx", (), {"encoder": TableEncoder(TATOEBA_TABLE), "tokenizer": None})()
    rows = {(lang, m): v for lang, m, v in tatoeba.run(ctx, settings)}
    assert rows[("de", "acc_xx_to_en")] == 0.75 and rows[("de", "acc_en_to_xx")] == 0.5
    assert rows[("de", "acc_mean")] == 0.625 and rows[("fr", "acc_mean")] == 1.0
    assert rows[("all", "acc_mean")] == pytest.approx(0.8125)
    assert set(ctx.encoder.layers) == {"xtreme"}
    assert tatoeba.read_local(str(tmp_path), "de", 2) == (["en 0", "en 1"], ["xx 0", "xx 1"])


def test_tatoeba_bad_files(tmp_path):
    (tmp_path / "tatoeba.deu-eng.deu").write_text("a\nb\nc\n", "utf-8")
    with pytest.raises(FileNotFoundError, match=r"tatoeba\.deu-eng\.eng' does not exist"):
        tatoeba.read_local(str(tmp_path), "de")
    (tmp_path / "tatoeba.deu-eng.eng").write_text("A\nB\n", "utf-8")
    with pytest.raises(ValueError, match=r"tatoeba\.deu-eng\.deu' has 3 lines but .*tatoeba\.deu-eng\.eng' has 2"):
        tatoeba.read_local(str(tmp_path), "de")
    (tmp_path / "tatoeba.deu-eng.eng").write_text("A\n\nC\n", "utf-8")
    with pytest.raises(ValueError, match=r"tatoeba\.deu-eng\.eng:2: empty line"):
        tatoeba.read_local(str(tmp_path), "de")
    with pytest.raises(FileNotFoundError, match=r"no tatoeba\.fra-eng\.fra"):
        tatoeba.read_local(str(tmp_path), "fr")
    settings = tatoeba.config()
    with pytest.raises(ValueError, match="set tatoeba.dir"):
        tatoeba.tatoeba_pairs(settings)
    settings.source = "hub"
    with pytest.raises(ValueError, match="tatoeba.source='hub'"):
        tatoeba.tatoeba_pairs(settings)


def test_xtreme_layer():
    assert [xtreme_layer(n) for n in (12, 24, 2, 6)] == [8, 14, 1, 4]
    assert resolve_layer("xtreme", 12) == 8 and resolve_layer("xtreme", 24) == 14
    with pytest.raises(ValueError, match="'middle', 'xtreme', 'last' or an integer"):
        resolve_layer("eighth", 12)


# ---------------------------------------------------------------------------------------------- TFDS readers


def test_tfds_tatoeba_and_xtreme_pos_on_mocked_datasets():
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=5, policy=tfds.testing.MockPolicy.USE_CODE):
        english, german = tatoeba.read_tfds("de", "", max_pairs=3)
        tagged = transfer_data.tfds_examples("xtreme_pos", "test", "de", "", "tagging", max_examples=3)
        with pytest.raises(ValueError, match="no config for language 'xx'"):
            transfer_data.tfds_examples("xtreme_pos", "test", "xx", "", "tagging")
    assert len(english) == len(german) == 3 and all(isinstance(s, str) for s in english + german)
    assert len(tagged) == 3 and all(ex.texts and ex.tags for ex in tagged)  # mock lengths are independent
    upos = {"ADJ", "ADP", "ADV", "AUX", "CCONJ", "DET", "INTJ", "NOUN", "NUM", "PART", "PRON", "PROPN", "PUNCT"}
    assert {t for ex in tagged for t in ex.tags} <= upos | {"SCONJ", "SYM", "VERB", "X", "_"}
    with pytest.raises(ValueError, match="TFDS tatoeba has no language 'xx'"):
        tatoeba.read_tfds("xx", "")


# ------------------------------------------------------------------------------------------------- UD-POS

CONLLU = """# sent_id = fr-1
# text = Du chat.
1-2\tDu\t_\t_\t_\t_\t_\t_\t_\t_
1\tde\tde\tADP\t_\t_\t3\tcase\t_\t_
2\tle\tle\tDET\t_\t_\t3\tdet\t_\t_
3\tchat\tchat\tNOUN\t_\t_\t0\troot\t_\t_
3.1\tvu\tvoir\tVERB\t_\t_\t_\t_\t_\t_
4\t.\t.\tPUNCT\t_\t_\t3\tpunct\t_\t_

# sent_id = fr-2
1\tOui\toui\tINTJ\t_\t_\t0\troot\t_\t_
2\t_\t_\t_\t_\t_\t1\tdep\t_\t_

"""


def test_conllu_words_and_upos_as_xtreme(tmp_path):
    path = tmp_path / "test-fr.conllu"
    path.write_text(CONLLU, "utf-8")
    examples = transfer_data.read_conllu(str(path))
    assert examples == [
        transfer_data.Example(("de", "le", "chat", "."), tags=("ADP", "DET", "NOUN", "PUNCT")),
        transfer_data.Example(("Oui",), tags=("INTJ",)),
    ]  # the multi-word token, the empty node and the '_' word are skipped
    assert transfer_data.read_tagging(str(path), max_examples=1) == examples[:1]
    (tmp_path / "train.conllu").write_text(CONLLU.replace("\tfr-", "\ten-"), "utf-8")
    (tmp_path / "train.conll").write_text("Paris\tB-LOC\n", "utf-8")  # .conllu wins when both are there
    assert transfer_data.local_files(str(tmp_path), "tagging") == (
        str(tmp_path / "train.conllu"),
        {"fr": str(path)},
    )
    settings = transfer.config(local_dir=str(tmp_path), source="local")
    train, tests = transfer.finetune_data("tagging", settings, seed=0, name="pos")
    assert train == examples and tests == {"fr": examples}
    settings.languages = "de"
    with pytest.raises(ValueError, match=r"^pos: no test-de file"):
        transfer.finetune_data("tagging", settings, seed=0, name="pos")
    (tmp_path / "bad.conllu").write_text("# sent_id = 1\n1\tde\tde\tADP\t_\t_\t0\troot\t_\t_\n2\tle\n", "utf-8")
    with pytest.raises(ValueError, match=r"bad\.conllu:3: expected 10 tab-separated CoNLL-U fields, got 2"):
        transfer_data.read_conllu(str(tmp_path / "bad.conllu"))
    (tmp_path / "empty.conllu").write_text("# only a comment\n", "utf-8")
    with pytest.raises(ValueError, match=r"empty\.conllu' holds no tagged sentences"):
        transfer_data.read_conllu(str(tmp_path / "empty.conllu"))


# ---------------------------------------------------------------------------------------- NER F1 = seqeval


def test_span_f1_equals_seqeval():
    from seqeval.metrics import f1_score

    cases = [
        ([["B-PER", "I-PER", "O", "B-LOC"]], [["B-PER", "I-PER", "O", "B-LOC"]]),
        ([["B-PER", "I-PER", "O", "B-LOC"]], [["B-PER", "O", "O", "B-LOC"]]),  # a span cut short
        ([["B-PER", "I-PER", "I-PER"]], [["B-PER", "I-LOC", "I-PER"]]),  # a type switch inside a span
        ([["O", "I-PER", "I-PER", "O"]], [["O", "B-PER", "I-PER", "O"]]),  # I- opening a span = B-
        ([["B-ORG", "B-ORG", "I-ORG"]], [["B-ORG", "I-ORG", "I-ORG"]]),  # adjacent spans vs one merged
        ([["B-LOC", "O"], ["I-LOC", "I-LOC"]], [["B-LOC", "I-LOC"], ["B-LOC", "I-LOC"]]),  # per-sentence spans
        ([["B-MISC", "I-PER"]], [["I-MISC", "I-PER"]]),
        ([["O", "O"]], [["B-PER", "O"]]),  # no gold span: 0
    ]
    for gold, pred in cases:
        assert finetune.span_f1(gold, pred) == pytest.approx(f1_score(gold, pred)), (gold, pred)
    # Every pair of length-4 sequences over O / B-/I- of two types (6,561 x 6,561 is too many: a seeded sample).
    tags = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
    sequences = [list(s) for s in itertools.product(tags, repeat=4)]
    rng = np.random.default_rng(0)
    for _ in range(300):
        gold = [sequences[i] for i in rng.integers(len(sequences), size=3)]
        pred = [sequences[i] for i in rng.integers(len(sequences), size=3)]
        assert finetune.span_f1(gold, pred) == pytest.approx(f1_score(gold, pred)), (gold, pred)


# ------------------------------------------------------------------------------------------- in the sweep


@pytest.fixture(scope="module")
def tiny_params():
    import flax.linen as nn

    from xlmp_jax.model.xlmp import init_params

    init = jax.jit(functools.partial(init_params, small_config(True)))
    return {True: jax.device_get(nn.unbox(init(jax.random.key(1)))["params"])}


@pytest.mark.slow
def test_pos_tatoeba_and_bucc_run_in_the_sweep_on_a_tiny_model(tmp_path, tiny_params):
    (tmp_path / "xlmp").mkdir()
    data = tmp_path / "data"
    for split, prefix in (("sample", "a"), ("training", "b")):
        folder = data / "bucc" / "fr-en"
        folder.mkdir(parents=True, exist_ok=True)
        words = ["chat", "chien", "maison", "arbre", "soleil", "lune"]
        english = ["cat", "dog", "house", "tree", "sun", "moon"]
        (folder / f"fr-en.{split}.fr").write_text("".join(f"fr-{prefix}{i}\tle {w}\n" for i, w in enumerate(words)))
        (folder / f"fr-en.{split}.en").write_text("".join(f"en-{prefix}{i}\tthe {w}\n" for i, w in enumerate(english)))
        (folder / f"fr-en.{split}.gold").write_text("".join(f"fr-{prefix}{i}\ten-{prefix}{i}\n" for i in range(3)))
    (data / "tatoeba").mkdir()
    (data / "tatoeba" / "tatoeba.fra-eng.fra").write_text("le chat\nle chien\nla maison\n")
    (data / "tatoeba" / "tatoeba.fra-eng.eng").write_text("the cat\nthe dog\nthe house\n")
    (data / "pos").mkdir()
    (data / "pos" / "train.conllu").write_text(CONLLU)
    (data / "pos" / "test-fr.conllu").write_text(CONLLU)
    config = sweep_config(tmp_path, ["xlmp"], evals="pos,tatoeba,bucc")
    config.pos.update(dict(local_dir=str(data / "pos"), steps=2, batch_size=2))
    config.tatoeba.dir = str(data / "tatoeba")
    config.bucc.update(dict(dir=str(data / "bucc"), languages=""))
    source = FakeCheckpoints(tiny_params, {"xlmp": (True, [10])})
    assert evaluate.run_sweep(config, checkpoints=source)["computed"] == 3 + 2  # pos: 3 fine-tuning seeds (default)
    table = {(r.eval, r.language, r.metric): r.value for r in ResultStore(config.out).rows}
    assert 0 <= table[("pos", "fr", "accuracy")] <= 1 and table[("pos", "fr", "examples")] == 2
    assert "f1" not in {m for e, _, m in table if e == "pos"}  # UPOS tags carry no spans
    assert 0 <= table[("tatoeba", "fr", "acc_xx_to_en")] <= 1 and ("tatoeba", "all", "acc_mean") in table
    assert 0 <= table[("bucc", "fr", "f1")] <= 1 and table[("bucc", "fr", "gold_pairs")] == 3
    assert table[("bucc", "fr", "candidates")] >= 1
