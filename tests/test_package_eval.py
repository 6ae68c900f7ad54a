"""The ``package`` eval (zero-shot transfer on the shipped package-group task) and its character n-gram baseline."""

from __future__ import annotations

import numpy as np
import pytest
from test_evaluate import FakeCheckpoints, sweep_config, tiny_params  # noqa: F401  (a fixture)

from data_pipelines import sample
from xlmp_jax import evaluate
from xlmp_jax.evals import ngram_baseline, package
from xlmp_jax.evals.results import ResultStore


def test_ngram_baseline_learns_a_separable_task_well_above_chance():
    rng = np.random.default_rng(0)
    cues = {"audio": "volume", "disk": "partition", "net": "socket", "mail": "inbox"}
    filler = "the a of to and now with this that from please then".split()

    def draw(n):
        texts, labels = [], []
        for i in range(n):
            label = list(cues)[i % len(cues)]
            words = list(rng.choice(filler, 5)) + [cues[label]]
            rng.shuffle(words)
            texts.append(" ".join(words))
            labels.append(label)
        return texts, labels

    model = ngram_baseline.fit(*draw(80))
    assert ngram_baseline.accuracy(model, *draw(40)) >= 0.9  # chance: 0.25
    with pytest.raises(ValueError, match="at least 2 distinct labels"):
        ngram_baseline.fit(["one text", "another"], ["a", "a"])


def test_task_data_is_the_shipped_split():
    data = package.task_data(package.config(languages="de,ja"))
    test = sample.read_transfer("test")
    assert list(data.tests) == ["en", "de", "ja"]
    assert len(data.tests["en"]) == len(test)
    assert len(data.tests["ja"]) == sum("ja" in it.translations for it in test)
    assert {ex.label for ex in data.train} == {ex.label for ex in data.tests["en"]}
    train_english = {sample.normalize(ex.texts[0]) for ex in data.train}
    assert train_english.isdisjoint(sample.normalize(ex.texts[0]) for ex in data.dev + data.tests["en"])


def test_check_refuses_bad_settings():
    with pytest.raises(ValueError, match=r"package.learning_rates: 'fast' is not a number"):
        package.check(package.config(learning_rates="1e-4,fast"), "package")
    with pytest.raises(ValueError, match="is not positive"):
        package.check(package.config(learning_rates="0"), "package")
    with pytest.raises(ValueError, match=r"package.languages: 'xx' has no translations"):
        package.check(package.config(languages="de,xx"), "package")


@pytest.mark.slow
def test_package_eval_runs_in_the_sweep_on_a_tiny_model(tmp_path, tiny_params):  # noqa: F811
    (tmp_path / "xlmp").mkdir()
    config = sweep_config(tmp_path, ["xlmp"], evals="package")
    settings = dict(
        languages="de,ja", steps=2, eval_every=1, learning_rates="1e-3,1e-2", seeds=2, devices=1, max_length=32
    )
    config.package.update(settings)
    source = FakeCheckpoints(tiny_params, {"xlmp": (True, [10])})
    assert evaluate.run_sweep(config, checkpoints=source)["computed"] == 2  # one cell per fine-tuning seed
    rows = ResultStore(config.out).rows
    assert {r.seed for r in rows} == {0, 1}
    table = {(r.language, r.metric): r.value for r in rows if r.seed == 0}
    for lang in ("en", "de", "ja"):
        assert 0 <= table[(lang, "accuracy")] <= 1 and 0 <= table[(lang, "ngram_accuracy")] <= 1
        assert 0 < table[(lang, "majority_rate")] <= 1 and table[(lang, "examples")] > 100
    assert table[("all", "accuracy")] == pytest.approx((table[("de", "accuracy")] + table[("ja", "accuracy")]) / 2)
    assert table[("all", "chance_uniform")] == pytest.approx(1 / len({it.label for it in sample.read_transfer()}))
    assert table[("en", "learning_rate")] in (1e-3, 1e-2) and table[("en", "best_step")] in (1, 2)
    assert max(table[("en", "dev_accuracy@lr=0.001")], table[("en", "dev_accuracy@lr=0.01")]) == pytest.approx(
        table[("en", "dev_accuracy")]
    )
    assert 0.5 < table[("en", "ngram_dev_accuracy")] < 1  # the surface cues alone: far above chance in English
