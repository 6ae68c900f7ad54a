"""XTREME's QA tasks (``evals.qa*``, ``xquad``, ``mlqa``, ``tydiqa``): EM/F1 with SQuAD's and MLQA's
normalisation on hand-computed cases, character <-> token alignment, doc-stride windows and span decoding,
the SQuAD-format and TFDS readers, and the three evals run by the sweep on a tiny model."""

from __future__ import annotations

import dataclasses
import functools
import json

import jax
import ml_collections
import numpy as np
import pytest
from test_evaluate import FakeCheckpoints, small_config, sweep_config

from xlmp_jax import evaluate
from xlmp_jax.evals import qa, qa_data, qa_finetune, qa_metrics, qa_windows, selection
from xlmp_jax.evals.context import load_tokenizer, vocab_path
from xlmp_jax.evals.qa_data import QAExample
from xlmp_jax.evals.results import ResultStore

# --------------------------------------------------------------------------------------------- EM / F1


def test_squad_normalisation_articles_punctuation_whitespace():
    # lower -> drop ASCII punctuation -> drop a/an/the as words -> collapse whitespace
    assert qa_metrics.squad_normalise("The  Eiffel-Tower, a landmark!") == "eiffeltower landmark"
    assert qa_metrics.squad_normalise("  a\tb \n c ") == "b c"
    assert qa_metrics.squad_normalise("Theatre") == "theatre"  # 'the' only as a whole word
    assert qa_metrics.exact_match("the Eiffel Tower", "Eiffel Tower.") == 1.0
    # in / eiffel / tower vs eiffel / tower / paris: 2 shared, P = R = 2/3
    assert qa_metrics.f1("in the Eiffel Tower", "Eiffel Tower Paris") == pytest.approx(2 / 3)
    assert qa_metrics.f1("the", "a") == 0.0 and qa_metrics.exact_match("the", "a") == 1.0  # both normalise to ''


def test_score_takes_the_best_gold_answer_per_question():
    # q1: "Paris" vs "Paris France": P 1, R 1/2 -> F1 2/3; vs "the city of Paris" (city/of/paris): R 1/3 -> 1/2.
    # q2: "1889" equals "1889." after normalisation. EM (0 + 1) / 2, F1 (2/3 + 1) / 2.
    scores = qa_metrics.score(["Paris", "1889"], [["Paris France", "the city of Paris"], ["in 1889", "1889."]])
    assert scores["exact_match"] == pytest.approx(50.0)
    assert scores["f1"] == pytest.approx(100 * (2 / 3 + 1) / 2)
    with pytest.raises(ValueError, match="question 0 .* no gold"):
        qa_metrics.score(["x"], [[]])


def test_mlqa_normalisation_per_language():
    # German and Spanish articles go, English ones stay for them; SQuAD's rules keep 'der'
    assert qa_metrics.mlqa_normalise("Der Vertrag von Versailles", "de") == "vertrag von versailles"
    assert qa_metrics.exact_match("der Vertrag", "Vertrag", "mlqa", "de") == 1.0
    assert qa_metrics.exact_match("der Vertrag", "Vertrag", "squad") == 0.0
    assert qa_metrics.exact_match("La Casa Blanca", "casa blanca", "mlqa", "es") == 1.0
    assert qa_metrics.mlqa_normalise("the house", "es") == "the house"
    # Unicode punctuation (category P*) goes in MLQA, not in SQuAD (ASCII only)
    assert qa_metrics.mlqa_normalise("„Faust“", "de") == "faust"
    assert qa_metrics.squad_normalise("„Faust“") == "„faust“"
    assert qa_metrics.mlqa_normalise("cái bàn", "vi") == "bàn"
    assert qa_metrics.mlqa_normalise("الكتاب", "ar") == "كتاب"
    with pytest.raises(ValueError, match="'fr'"):
        qa_metrics.mlqa_normalise("le livre", "fr")


def test_mlqa_chinese_is_scored_per_character():
    # 北京大学 -> 北 京 大 学 against 北 京: 2 shared, P 2/4, R 2/2 -> F1 2/3; SQuAD sees two different words
    assert qa_metrics.mlqa_normalise("abc 北京大学", "zh") == "abc 北 京 大 学"
    assert qa_metrics.f1("北京大学", "北京", "mlqa", "zh") == pytest.approx(2 / 3)
    assert qa_metrics.f1("北京大学", "北京", "squad") == 0.0
    assert qa_metrics.exact_match("北京。", "北京", "mlqa", "zh") == 1.0  # 。 is Unicode punctuation
    assert qa_metrics.exact_match("北京。", "北京", "squad") == 0.0


# ------------------------------------------------------------------------------ alignment and windows


class CharTokenizer:
    """One token per non-space character; its piece carries SentencePiece's '▁' at a word start."""

    pad_id, bos_id, eos_id, unk_id = 1, 0, 2, 3

    def __init__(self):
        self.pieces: list[str] = []

    def encode(self, text: str) -> list[int]:
        ids = []
        for k, char in enumerate(text):
            if char.isspace():
                continue
            piece = ("\u2581" if k == 0 or text[k - 1].isspace() else "") + char
            if piece not in self.pieces:
                self.pieces.append(piece)
            ids.append(10 + self.pieces.index(piece))
        return ids

    def id_to_piece(self, i: int) -> str:
        return self.pieces[i - 10]


def test_alignment_round_trips_multilingual_text(sample_vocab):
    text = "Der Bäcker wohnt in Köln. 北京大学 Москва — ﬁnal café"
    ids, starts, ends = qa_windows.align(sample_vocab, text)
    assert ids == [i for word in text.split() for i in sample_vocab.encode(word)]
    assert starts == sorted(starts) and all(s <= e for s, e in zip(starts, ends, strict=True))
    # every token's characters, in order, rebuild the text without its spaces (<unk> and the NFKC-rewritten
    # ligature ﬁ included: they span up to the next matched piece)
    assert "".join(text[s:e] for s, e in zip(starts, ends, strict=True)) == text.replace(" ", "")
    for word in ("Bäcker", "Köln.", "北京大学", "Москва", "ﬁnal", "café"):
        first = text.index(word)
        tokens = qa_windows.answer_tokens(starts, ends, first, first + len(word))
        assert text[starts[tokens[0]] : ends[tokens[1]]] == word
    first = text.index("北京大学")
    spans = [text[s:e] for s, e in zip(starts, ends, strict=True) if first <= s < first + 4]
    assert spans == ["", "北京", "大", "学"]  # '▁', <unk>, 大, <unk> in the sample vocabulary


CONTEXT = "Der Bäcker Karl wohnt seit Jahren in Köln am Rhein"  # 41 characters without spaces = 41 tokens


def test_answer_in_the_second_window_is_found_and_mapped_back():
    # max_length 24 - question 3 - 4 specials = 17 context tokens per window, stride 8: slices at 0, 8, 16, 24.
    # "seit" is tokens 18..21 (Der 0-2, Bäcker 3-8, Karl 9-12, wohnt 13-17): outside window 0 (0..16); in window
    # 1 (8..24) with 6 tokens of context on its short side, in window 2 (16..32) with 2: window 1 scores it.
    tok = CharTokenizer()
    example = QAExample("q1", "wo?", CONTEXT, ("seit",), (CONTEXT.index("seit"),))
    windows, skipped = qa_windows.make_windows([example], tok, 24, 8, 64, training=True)
    assert skipped == 0 and len(windows) == 4
    assert [w.label for w in windows] == [(0, 0), (16, 19), (8, 11), (0, 0)]  # 6 head tokens: 6 + 18 - 8 = 16
    assert all(len(w.ids) <= 24 for w in windows)
    second = windows[1]
    assert CONTEXT[second.char_start[16] : second.char_end[19]] == "seit"
    assert second.max_context[16] and not windows[2].max_context[8]
    # logits peaking at the answer in both windows that hold it: only window 1 may start the span there
    start, end = np.zeros((4, 24)), np.zeros((4, 24))
    start[1, 16], end[1, 19], end[1, 18] = 5.0, 5.0, 1.0  # seit = 10, sei = 6
    start[2, 8], end[2, 11] = 9.0, 0.5  # window 2's start at "s" is not max-context; a start at 't' scores 0.5
    start[2, 12], end[2, 13] = 1.0, 1.0  # "Ja" in window 2: 2
    assert qa_windows.best_answers([example], windows, start, end, max_answer_length=30) == ["seit"]
    assert qa_windows.best_answers([example], windows, start, end, max_answer_length=3) == ["sei"]
    moved = QAExample("q2", "wo?", CONTEXT, ("seit",), (0,))
    assert qa_windows.make_windows([moved], tok, 24, 8, 64, training=True) == ([], 1)  # answer not at its start
    with pytest.raises(ValueError, match="max_length=7 leaves no room"):
        qa_windows.make_windows([example], tok, 7, 8, 64)


def test_span_loss_on_hand_made_logits():
    import jax.numpy as jnp

    logits = jnp.zeros((1, 4, 2)).at[0, 1, 0].set(np.log(3.0))  # start: weights 1, 3, 1, (pad) -> p = 3/5
    loss = qa_finetune.span_cross_entropy(logits, jnp.array([[1, 2]]), jnp.array([[True, True, True, False]]))
    assert float(loss) == pytest.approx((-np.log(3 / 5) - np.log(1 / 3)) / 2, rel=1e-5)


# --------------------------------------------------------------------------------------------- readers


def squad_file(path, paragraphs: list[tuple[str, list[tuple[str, str, list[str]]]]]) -> None:
    """A SQuAD v1.1-format file: paragraphs of (context, [(id, question, answers)]), offsets found here."""
    data = [
        {
            "title": "t",
            "paragraphs": [
                {
                    "context": context,
                    "qas": [
                        {
                            "id": qid,
                            "question": q,
                            "answers": [{"text": a, "answer_start": context.index(a)} for a in ans],
                        }
                        for qid, q, ans in qas
                    ],
                }
                for context, qas in paragraphs
            ],
        }
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"version": "1.1", "data": data}, ensure_ascii=False, indent=1), encoding="utf-8")


def test_squad_json_reader_and_bad_files(tmp_path):
    squad_file(tmp_path / "a.json", [("Anna lives in Rome.", [("1", "Where?", ["Rome", "in Rome"])])])
    assert qa_data.read_squad_json(str(tmp_path / "a.json")) == [
        QAExample("1", "Where?", "Anna lives in Rome.", ("Rome", "in Rome"), (14, 11))
    ]
    (tmp_path / "b.json").write_text('{"data": [\n  {"paragraphs": [}\n]}', encoding="utf-8")
    with pytest.raises(ValueError, match=r"b\.json:2: not valid JSON"):
        qa_data.read_squad_json(str(tmp_path / "b.json"))
    (tmp_path / "c.json").write_text('{"data": [{"paragraphs": [{"context": "x", "qas": [{"id": "7"}]}]}]}')
    with pytest.raises(ValueError, match=r"c\.json: data\[0\]\.paragraphs\[0\]\.qas\[0\] has no 'answers'"):
        qa_data.read_squad_json(str(tmp_path / "c.json"))
    with pytest.raises(FileNotFoundError, match="mlqa: .*test-context-de-question-de.json"):
        qa_data.local_file(str(tmp_path), qa_data.MLQA_TEST.format(lang="de"), "mlqa")


def test_tfds_readers_on_mocked_datasets():
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=4, policy=tfds.testing.MockPolicy.USE_CODE):
        read = {
            name: qa_data.read_tfds(name, split, "", max_examples=3)
            for name, split in (
                ("squad/v1.1", "train"),
                ("xquad/de", "test"),
                ("mlqa/zh", "test"),
                ("tydi_qa/goldp", "validation-ko"),
            )
        }
        with pytest.raises(ValueError, match="'tydi_qa/goldp' split 'train' has no examples with ids starting"):
            qa_data.read_tfds("tydi_qa/goldp", "train", "", id_prefix="english-")  # mock ids name no language
    for examples in read.values():
        assert len(examples) == 3
        for ex in examples:
            assert isinstance(ex.context, str) and isinstance(ex.question, str) and isinstance(ex.id, str)
            assert len(ex.answers) == len(ex.starts) and all(isinstance(s, int) for s in ex.starts)


# ------------------------------------------------------------------------------------------- in the sweep

TRAIN = [
    ("Anna lives in Rome and works in a bakery.", [("t1", "Where does Anna live?", ["Rome"])]),
    ("The tower was built in 1889 by Gustave Eiffel.", [("t2", "When was the tower built?", ["1889"])]),
]
TESTS = {
    "de": [("Der Turm wurde 1889 von Gustave Eiffel gebaut.", [("d1", "Wann wurde der Turm gebaut?", ["1889"])])],
    "zh": [("北京是中国的首都。", [("z1", "中国的首都是哪里？", ["北京"])])],
    "en": [("Anna lives in Rome.", [("e1", "Where?", ["Rome", "in Rome"])])],
}


@pytest.fixture(scope="module")
def tiny_params():
    """{True: XLM-P params of the tiny architecture (random init)}."""
    import flax.linen as nn

    from xlmp_jax.model.xlmp import init_params

    init = jax.jit(functools.partial(init_params, small_config(True)))
    return {True: jax.device_get(nn.unbox(init(jax.random.key(2)))["params"])}


def qa_fixture(data) -> None:
    """XTREME's download layout for the three QA tasks (SQuAD, XQuAD, MLQA, TyDiQA-GoldP) on tiny files."""
    squad_file(data / qa_data.SQUAD_TRAIN, TRAIN)
    squad_file(data / qa_data.SQUAD_DEV, TRAIN[:1])
    squad_file(data / qa_data.TYDIQA_TRAIN, TRAIN)
    for lang, paragraphs in TESTS.items():
        squad_file(data / qa_data.MLQA_TEST.format(lang=lang), paragraphs)
        squad_file(data / qa_data.XQUAD_TEST.format(lang=lang), paragraphs)
        squad_file(data / qa_data.TYDIQA_DEV.format(lang=lang), paragraphs)


QA_TINY = dict(steps=3, eval_every=1, batch_size=2, max_length=32, doc_stride=8, max_query_length=8, devices=1)


def test_qa_evals_run_in_the_sweep_on_a_tiny_model(tmp_path, tiny_params):
    (tmp_path / "xlmp").mkdir()
    data = tmp_path / "xtreme"
    qa_fixture(data)
    config = sweep_config(tmp_path, ["xlmp"], evals="xquad,mlqa")
    for name in ("xquad", "mlqa"):
        config[name].update(dict(dir=str(data), languages="en,de,zh", seeds=2, **QA_TINY))
    source = FakeCheckpoints(tiny_params, {"xlmp": (True, [10])})
    assert evaluate.run_sweep(config, checkpoints=source)["computed"] == 2 * 2  # one cell per fine-tuning seed
    rows = ResultStore(config.out).rows
    assert {(r.eval, r.seed) for r in rows} == {(n, s) for n in ("xquad", "mlqa") for s in (0, 1)}
    table = {(r.eval, r.language, r.metric): r.value for r in rows if r.seed == 0}
    for name in ("xquad", "mlqa"):
        for lang in ("en", "de", "zh"):
            for metric in ("exact_match", "f1"):
                assert 0.0 <= table[(name, lang, metric)] <= 1.0  # fractions, as every task's scores
        assert table[(name, "de", "questions")] == 1 and table[(name, "en", "dev_questions")] == 1
        assert 0.0 <= table[(name, "en", "dev_f1")] <= 1.0 and table[(name, "en", "best_step")] in (1, 2, 3)
        assert np.isfinite(table[(name, "en", "train_loss_last")]) and table[(name, "en", "train_skipped")] == 0
    # XQuAD-en is SQuAD v1.1 dev: flagged and outside the mean; MLQA-en is an ordinary test language
    assert table[("xquad", "en", "in_english_dev")] == 1 and ("mlqa", "en", "in_english_dev") not in table
    assert table[("xquad", "all", "f1")] == pytest.approx(
        np.mean([table[("xquad", lang, "f1")] for lang in "de zh".split()])
    )
    assert table[("mlqa", "all", "f1")] == pytest.approx(
        np.mean([table[("mlqa", lang, "f1")] for lang in ("en", "de", "zh")])
    )


def test_finetune_qa_reports_the_tests_of_the_dev_best_step(tiny_params, monkeypatch):
    """Dev F1 is scripted to peak after step 2 of 3: the tests are scored right after that dev scoring
    (same parameters), not after step 3; the sweep's rows follow ``selection.task_rows``."""
    from xlmp_jax.hf.encoder import Encoder

    encoder = Encoder(small_config(True), tiny_params[True], batch_size=2, max_length=32)
    tokenizer = load_tokenizer(vocab_path(ml_collections.ConfigDict()))  # the sample vocabulary
    script, params_at = iter([20.0, 90.0, 40.0]), []
    real = qa_finetune.evaluate

    def scripted(tuner, tok, examples, settings, normalisation, lang):
        scores = real(tuner, tok, examples, settings, normalisation, lang)
        if lang == "en" and examples is dev:
            params_at.append(jax.device_get(tuner.params["head"]["kernel"]))
            return {**scores, "f1": next(script)}
        params_at.append(jax.device_get(tuner.params["head"]["kernel"]))
        return scores

    monkeypatch.setattr(qa_finetune, "evaluate", scripted)
    train = qa_data_examples(TRAIN)
    dev = train[:1]
    tests = {lang: qa_data_examples(p) for lang, p in TESTS.items()}
    settings = qa_finetune.QASettings(**{k: v for k, v in QA_TINY.items()})
    result = qa_finetune.finetune_qa(encoder, tokenizer, train, dev, tests, 0, settings)
    assert result.best_step == 2 and result.history == ((1, 20.0), (2, 90.0), (3, 40.0)) and len(result.losses) == 3
    np.testing.assert_array_equal(params_at[-1], params_at[1])  # the tests ran on step 2's parameters
    assert not np.array_equal(params_at[1], params_at[2])
    rows = selection.task_rows(qa.task_scores("xquad", result))
    by = {(lang, metric): v for lang, metric, v in rows}
    assert by[("en", "dev_f1")] == pytest.approx(0.9) and by[("en", "best_step")] == 2.0
    assert by[("en", "in_english_dev")] == 1.0 and ("de", "in_english_dev") not in by


def qa_data_examples(paragraphs) -> list[QAExample]:
    return [
        QAExample(qid, q, context, tuple(ans), tuple(context.index(a) for a in ans))
        for context, qas in paragraphs
        for qid, q, ans in qas
    ]


def test_task_scores_keep_english_dev_test_sets_out_of_the_mean():
    result = qa_finetune.QAResult(
        tests={
            "en": {"exact_match": 100.0, "f1": 100.0, "questions": 2.0},
            "de": {"exact_match": 50.0, "f1": 60.0, "questions": 2.0},
            "ar": {"exact_match": 0.0, "f1": 20.0, "questions": 4.0},
        },
        dev={"exact_match": 80.0, "f1": 85.0, "questions": 5.0},
        losses=[3.0, 2.0],
        skipped=1,
        best_step=7,
    )
    rows = selection.task_rows(qa.task_scores("tydiqa", result))
    by = {(lang, metric): v for lang, metric, v in rows}
    assert by[("all", "f1")] == pytest.approx(0.4)  # (0.6 + 0.2) / 2: TyDiQA-en is its English dev set
    assert by[("all", "exact_match")] == pytest.approx(0.25)
    assert (by[("en", "f1")], by[("en", "in_english_dev")]) == (1.0, 1.0)
    assert (by[("en", "dev_f1")], by[("en", "dev_exact_match")], by[("en", "best_step")]) == (0.85, 0.8, 7.0)
    assert by[("ar", "questions")] == 4.0 and by[("en", "train_skipped")] == 1.0
    mlqa = {(lang, metric): v for lang, metric, v in selection.task_rows(qa.task_scores("mlqa", result))}
    assert mlqa[("all", "f1")] == pytest.approx(0.6) and ("en", "in_english_dev") not in mlqa
    only_en = dataclasses.replace(result, tests={"en": result.tests["en"]})
    with pytest.raises(ValueError, match="xquad.languages='en'"):
        qa.task_scores("xquad", only_en)


def test_finetune_qa_bad_inputs(tmp_path):
    config = qa.config("mlqa")
    config.source = "nowhere"
    with pytest.raises(ValueError, match="mlqa.source='nowhere'"):
        qa.read_data("mlqa", config)
    config.source = "local"
    with pytest.raises(ValueError, match="set mlqa.dir"):
        qa.read_data("mlqa", config)
