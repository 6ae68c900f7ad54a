"""The in-training eval set (`make_balanced_eval_data`) and its summary (`trainer.run_eval`): every trained language
gets the same number of held-out rows, and `eval/loss` is the mean of the per-language losses."""

import math

import ml_collections
import numpy as np
import pytest
from test_data_fixtures import make_corpus, train_spm

from data_pipelines.config import default_data_config
from data_pipelines.eval_data import balanced_rows_per_language, make_balanced_eval_data, make_eval_data
from xlmp_jax.training import metrics, trainer


@pytest.fixture(scope="module")
def cfg(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("corpus"))
    make_corpus(root)  # en 400 lines, fr 120, ru 60: validation rows differ a lot between languages
    c = default_data_config()
    c.update(source="text", path=root, vocab_path=train_spm(root, root + "/spm"), seq_length=32, packing="none")
    c.decompress_dir = str(tmp_path_factory.mktemp("cache"))  # the prepared rows, shared by the module's tests
    return c


def _real_rows(batches, key="language"):
    return np.concatenate([b[key][b["attention_mask"].any(1)] for b in batches])


def test_rows_per_language_budget():
    assert balanced_rows_per_language(3, 4, 3) == 4
    assert balanced_rows_per_language(2, 4, 3) == 2  # floor: never more than the budget ...
    assert balanced_rows_per_language(1, 2, 5) == 1  # ... except that every language keeps one row
    assert balanced_rows_per_language(0, 32, 3) == 0  # 0 batches = every held-out row


def test_every_language_gets_the_same_rows_where_a_cut_concatenation_gets_one(cfg):
    cut = list(make_eval_data(cfg, batch_size=4))[:3]  # the old in-training eval: 3 batches of a concatenation
    assert set(_real_rows(cut).tolist()) == {0}  # English only

    batches = make_balanced_eval_data(cfg, batch_size=4, num_batches=3)
    assert len(batches) == 3 and all(b["input_ids"].shape == (4, 32) for b in batches)
    langs, counts = np.unique(_real_rows(batches), return_counts=True)
    assert langs.tolist() == [0, 1, 2] and counts.tolist() == [4, 4, 4]
    for lid, lang in enumerate(("en", "fr", "ru")):  # the first rows of each language, with their fixed masks
        alone = make_eval_data(cfg, batch_size=4, languages=[lang])
        for key in ("input_ids", "weights", "targets"):
            expect = _real_rows(alone, key)[:4]
            got = np.concatenate([b[key][(b["language"] == lid) & b["attention_mask"].any(1)] for b in batches])
            np.testing.assert_array_equal(got, expect)


def test_zero_batches_means_every_held_out_row(cfg):
    everything = make_balanced_eval_data(cfg, batch_size=8, num_batches=0)
    assert len(_real_rows(everything)) == len(_real_rows(make_eval_data(cfg, batch_size=8)))


def _fake_eval_step(num_languages: int):
    """The additive sums of `steps.make_eval_step`, with a per-token loss of 1 + language id."""

    def step(state, batch):
        w, lang = batch["weights"].astype(np.float64), batch["language"]
        row_count = w.sum(1)
        row_nll = row_count * (1.0 + lang)
        seg = lambda x: np.bincount(lang, weights=x, minlength=num_languages)  # noqa: E731
        return {
            "nll_sum": row_nll.sum(),
            "correct_sum": 0.5 * row_count.sum(),
            "num_predictions": row_count.sum(),
            "lang_loss_sum": seg(row_nll),
            "lang_correct_sum": seg(0.5 * row_count * (lang == 0)),
            "lang_count": seg(row_count),
        }

    return step


def test_eval_loss_is_the_mean_of_the_language_losses(cfg):
    languages = ["en", "fr", "ru"]
    batches = make_balanced_eval_data(cfg, batch_size=4, num_batches=3)
    config = ml_collections.ConfigDict({"train": {"eval_batch_size": 4}, "model": {"pad_token_id": 1}})
    scalars, _ = trainer.run_eval(config, _fake_eval_step(3), None, batches, languages)
    for lid, lang in enumerate(languages):
        assert scalars[f"eval/loss/{lang}"] == pytest.approx(1.0 + lid)
    assert scalars["eval/loss"] == pytest.approx(2.0)  # (1 + 2 + 3) / 3
    assert scalars["eval/mlm_accuracy"] == pytest.approx(0.5 / 3)  # (0.5 + 0 + 0) / 3
    tokens = {lid: sum(float(b["weights"][b["language"] == lid].sum()) for b in batches) for lid in range(3)}
    weighted = sum(n * (1 + lid) for lid, n in tokens.items()) / sum(tokens.values())
    assert scalars["eval/loss_tokens"] == pytest.approx(weighted)
    assert abs(weighted - 2.0) > 0.01  # the languages' token counts differ: the two figures are not the same
    assert scalars["eval/languages"] == 3


def test_language_means_skip_languages_without_predictions():
    scalars = {"loss": 2.5, "mlm_accuracy": 0.5, "loss/a": 1.0, "mlm_accuracy/a": 0.2, "loss/c": 3.0}
    scalars["mlm_accuracy/c"] = 0.6
    out = metrics.language_means(scalars, ["a", "b", "c"])
    assert out["loss"] == 2.0 and out["loss_tokens"] == 2.5 and out["languages"] == 2
    assert out["mlm_accuracy"] == pytest.approx(0.4) and out["mlm_accuracy_tokens"] == 0.5
    assert math.isnan(metrics.language_means({"loss": 1.0, "mlm_accuracy": 1.0}, ["a"])["loss"])
