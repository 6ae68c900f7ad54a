"""bench.science's statistics and report (the experiment itself is a committed command, not a test)."""

import os

import numpy as np
import pytest
from scipy import stats

from bench import science


def test_paired_difference_interval_is_the_paired_t_interval():
    xlmp, baseline = [0.31, 0.35, 0.30, 0.36], [0.28, 0.30, 0.29, 0.31]
    p = science.paired(xlmp, baseline)
    d = np.subtract(xlmp, baseline)
    low, high = stats.ttest_rel(xlmp, baseline).confidence_interval(0.95)
    assert p["diff"] == pytest.approx(d.mean()) and p["n"] == 4
    assert (p["diff_low"], p["diff_high"]) == pytest.approx((low, high))
    assert p["xlmp_std"] == pytest.approx(np.std(xlmp, ddof=1))
    same = science.paired([0.2, 0.4, 0.3], [0.2, 0.4, 0.3])
    assert same["diff"] == same["diff_low"] == same["diff_high"] == 0.0


def test_runs_pair_every_seed_and_name_an_unknown_ablation():
    runs = science.runs([0, 1], ["old_pool"])
    names = [r["name"] for r in runs]
    assert names == ["xlmp_s0", "baseline_s0", "xlmp_s1", "baseline_s1", "xlmp_old_pool_s0", "xlmp_old_pool_s1"]
    assert runs[1]["config"] == "configs/tiny_baseline.py" and runs[1]["pool"] == {}
    assert runs[-1]["pool"]["key_loss_weight"] == 0.0 and runs[-1]["seed"] == 1
    # A variant runs on the first ABLATION_SEEDS seeds only.
    assert [r["seed"] for r in science.runs(range(5), ["old_pool"]) if r["arm"] == "old_pool"] == [0, 1, 2]
    with pytest.raises(SystemExit, match="unknown ablation 'no_such'"):
        science.runs([0], ["no_such"])


def _scalars(ami: float, p99: float, mantel_p: float, retrieval_base: float, retrieval_xlmp: float) -> dict:
    keys = {m: 0.5 for m in science.POOL_METRICS}
    keys.update(ami_prompt_language=ami, ami_prompt_language_shuffled_p99=p99, ami_prompt_script=ami + 0.05)
    keys.update(mantel_p_script=mantel_p, mantel_p_family=mantel_p, pool_fraction_top=0.75)
    out = {}
    for seed in range(3):
        out[f"xlmp_s{seed}"] = dict(keys, retrieval_mean=retrieval_xlmp + 0.01 * seed, mlm_loss_mean=5.0)
        out[f"baseline_s{seed}"] = dict(keys, retrieval_mean=retrieval_base + 0.01 * seed, mlm_loss_mean=5.0)
    return out


def _verdicts(scalars: dict) -> dict[str, bool]:
    xr, br = [f"xlmp_s{s}" for s in range(3)], [f"baseline_s{s}" for s in range(3)]
    main = {k: science.paired([scalars[r][k] for r in xr], [scalars[r][k] for r in br]) for k in scalars[xr[0]]}
    main["retrieval_low_resource"] = main["retrieval_mean"]
    return {name.split(" ")[0]: ok for name, _, ok in science.targets(main, scalars, xr)}


def test_targets_follow_the_numbers():
    good = _verdicts(_scalars(ami=0.7, p99=0.02, mantel_p=0.001, retrieval_base=0.20, retrieval_xlmp=0.25))
    assert good == {"AMI(top": True, "AMI": True, "routing": True, "at": True, "retrieval": True, "MLM": True}
    bad = _verdicts(_scalars(ami=0.6, p99=0.02, mantel_p=0.02, retrieval_base=0.20, retrieval_xlmp=0.205))
    assert not bad["AMI(top"] and not bad["routing"] and not bad["retrieval"]
    # Below 10 % baseline retrieval the retrieval target does not apply (reported as such, never failed).
    low = science.targets(
        {
            "retrieval_mean": science.paired([0.03] * 3, [0.02] * 3),
            "mlm_loss_mean": science.paired([5.0] * 3, [5.0] * 3),
        },
        _scalars(0.7, 0.02, 0.001, 0.02, 0.03),
        [f"xlmp_s{s}" for s in range(3)],
    )
    assert any("does not apply" in figure for _, figure, _ in low)


def test_hand_written_notes_survive_a_rerun(tmp_path):
    doc = tmp_path / "SCIENCE.md"
    assert science._kept_notes(str(doc)).strip() == science.NOTES_MARKER
    doc.write_text("old figures\n" + science.NOTES_MARKER + "\n## Reading\nkept text\n")
    assert science._kept_notes(str(doc)) == "\n" + science.NOTES_MARKER + "\n## Reading\nkept text\n"


def test_the_experiment_adds_languages_so_two_scripts_beside_latin_hold_three():
    from data_pipelines import languages as language_table
    from data_pipelines import sample

    scripts = [language_table.script(lang) for lang in science.languages()]
    crowded = {s for s in set(scripts) if scripts.count(s) >= 3 and s != "Latn"}
    assert len(crowded) >= 2, crowded
    assert set(science.EXTRA_LANGUAGES) <= set(sample.languages())
    override = [a for a in science.EXPERIMENT if a.startswith("--config.data.languages=")]
    assert len(override) == 1 and all(f"'{lang}'" in override[0] for lang in science.languages())


def _pool_rows(ami: float) -> dict[str, float]:
    rows = {}
    for where in ("all", "script:Cyrl"):
        for stem, _ in science.CLUSTERERS:
            for against in ("language",) if stem == "script" else ("language", "script"):
                name = f"{where}|ami_{stem}_{against}"
                rows.update({name: ami, f"{name}_shuffled_p99": 0.01, f"{name}_ci_low": ami - 0.1})
                rows[f"{name}_ci_high"] = ami + 0.1
    return rows


def test_report_tables_put_the_references_beside_the_pool_for_both_arms():
    scalars = _scalars(ami=0.7, p99=0.02, mantel_p=0.001, retrieval_base=0.20, retrieval_xlmp=0.25)
    for values in scalars.values():
        values.update(retrieval_en_to_xx=0.1, retrieval_xx_to_en=0.1, retrieval_low_resource=0.1)
        values.update(
            transfer_en=0.5, transfer_zero_shot=0.2, **{f"mlm_loss/{lang}": 5.0 for lang in science.languages()}
        )
    pool = {name: _pool_rows(0.6 if name.startswith("xlmp") else 0.4) for name in scalars}
    pool["baseline_s0"] = {k: v for k, v in pool["baseline_s0"].items() if "prompt" not in k}
    run_list = science.runs([0, 1, 2], [])
    meta = dict(command="python -m bench.science", date="today", machine="cpu", plots="plots")
    text, numbers = science.report(scalars, run_list, ["cy"], meta, pool)
    assert "## The pool against references on the same sentences" in text and numbers["pool"] is pool
    assert "| script label alone (no model) | 0.600 [0.500, 0.700] | 0.010 | n/a | 0.400 [0.300, 0.500]" in text
    assert "| TF-IDF of token ids -> SVD -> k-means, k = M | 0.600 [0.500, 0.700] | 0.010 | 0.600 |" in text
    assert "| Cyrl (ru, uk, bg, kk) | XLM-P: top prompt | 0.600 [0.500, 0.700] | 0.010 |" in text
    assert "mantel_p_family_within_script" in text


def _mlm(diffs: list[float], baseline: float = 5.0) -> dict[str, float]:
    return science.paired([baseline + d for d in diffs], [baseline] * len(diffs))


def test_mlm_verdict_compares_the_interval_with_one_percent_of_the_baseline_mean():
    # baseline mean 5.0: the margin is +0.05 loss units
    assert science.non_inferiority(_mlm([-0.02, 0.0, 0.01, -0.01, 0.02]))[0] == "non-inferior"
    assert science.non_inferiority(_mlm([0.08, 0.09, 0.10, 0.085, 0.095]))[0] == "inferior"
    straddling = _mlm([-0.05, 0.15, 0.0, 0.1, 0.05])
    assert straddling["diff_low"] < 0.05 < straddling["diff_high"]
    assert science.non_inferiority(straddling)[0] == "undecided"
    assert science.non_inferiority(_mlm([0.0, 0.01]))[1] == pytest.approx(0.05)
    assert science.non_inferiority(_mlm([0.0, 0.01], baseline=7.0))[1] == pytest.approx(0.07)
    # A point estimate inside the margin is not enough: a wide interval leaves it undecided.
    wide = _mlm([-0.2, 0.2, -0.1, 0.15])
    assert wide["diff"] < 0.05 and science.non_inferiority(wide)[0] == "undecided"


def test_the_mlm_target_is_met_only_when_non_inferior():
    def mlm_target(diffs):
        main = {"retrieval_mean": science.paired([0.03] * 3, [0.02] * 3), "mlm_loss_mean": _mlm(diffs)}
        (name, figure, ok) = science.targets(main, _scalars(0.7, 0.02, 0.001, 0.02, 0.03), ["xlmp_s0"])[-1]
        assert name.startswith("MLM non-inferiority") and "margin of +0.050" in figure
        return figure.rsplit(": ", 1)[1], ok

    assert mlm_target([0.0, 0.01, -0.01]) == ("non-inferior", True)
    assert mlm_target([0.1, 0.11, 0.09]) == ("inferior", False)
    assert mlm_target([-0.3, 0.3, 0.05]) == ("undecided", False)


def test_the_compute_line_states_tokens_and_each_arms_flops_per_step():
    preset = science.PRESETS["experiment"]
    run_list = science.runs([0], [], preset)
    line = science.compute_line(run_list, preset, 400)
    xlmp = science.step_flops("configs/tiny.py", science.run_args(run_list[0], preset, 400))
    base = science.step_flops("configs/tiny_baseline.py", science.run_args(run_list[1], preset, 400))
    assert xlmp > base  # the prompts are prepended: more positions per row
    assert f"400 steps x 32 rows x 128 tokens = {400 * 32 * 128 / 1e6:.2f} M tokens" in line
    assert f"xlmp {xlmp / 1e9:.2f} G, baseline {base / 1e9:.2f} G" in line
    assert f"{xlmp / base:.3f} x the baseline's (its 4 prompt vectors" in line and "not equal FLOPs" in line


def test_presets_produce_their_runs_and_overrides_without_training():
    experiment = science.PRESETS["experiment"]
    assert experiment.seeds == tuple(range(10)) and experiment.ablation == ("no_diversity_loss", "small_prompt_init")
    names = [r["name"] for r in science.runs(experiment.seeds, experiment.ablation, experiment)]
    assert len(names) == 26 and names[:2] == ["xlmp_s0", "baseline_s0"] and names[-1] == "xlmp_small_prompt_init_s2"
    args = science.run_args(science.runs([3], [], experiment)[0], experiment, 400)
    assert args[: len(science.EXPERIMENT)] == science.EXPERIMENT
    assert args[len(science.EXPERIMENT) :] == [
        "--config.train.steps=400", "--config.train.checkpoint_every=400", "--config.train.keep_checkpoints=1",
        "--config.train.seed=3", *[f"--config.model.pool.{k}={v}" for k, v in science.POOL_OPTIONS.items()],
    ]  # fmt: skip

    device = science.PRESETS["device"]
    run_list = science.runs(device.seeds, device.ablation, device)
    assert [r["name"] for r in run_list] == ["xlmp_s0", "baseline_s0", "xlmp_s1", "baseline_s1"]
    args = science.run_args(run_list[1], device, device.steps)
    assert list(science.SMALL) == args[len(science.EXPERIMENT) : len(science.EXPERIMENT) + len(science.SMALL)]
    assert f"--config.train.steps={device.steps}" in args and args[-1] == "--config.train.seed=0"
    assert any(a.endswith(science.DEVICE_PREPARED) and "prepared_dir=" in a for a in args) and device.gpu

    curve = science.PRESETS["curve"]
    run_list = science.runs(curve.seeds, curve.ablation, curve)
    assert [r["name"] for r in run_list] == ["baseline_tiny_s0", "baseline_mini_s0"]
    assert all(r["pool"] == {} and r["config"] == "configs/tiny_baseline.py" for r in run_list)
    args = science.run_args(run_list[1], curve, curve.steps)
    every = curve.steps // curve.checkpoints
    assert f"--config.train.checkpoint_every={every}" in args and "--config.train.keep_checkpoints=4" in args
    assert science.sweep_steps(curve, 3200) == "800,1600,2400,3200" and science.sweep_steps(experiment, 500) == "latest"
    assert set(science.MINI) <= set(args) and "pool" not in curve.evals
    with pytest.raises(SystemExit, match="equal checkpoint intervals"):
        science.step_args(100, 8)


def test_the_command_line_overrides_a_preset(monkeypatch):
    args, preset, seeds, ablation, steps = science.parse(["--preset=device"])
    assert preset is science.PRESETS["device"] and seeds == [0, 1] and ablation == [] and steps == 1000
    assert args.doc.endswith("workdirs/science_device/SCIENCE_DEVICE.md")
    args, preset, seeds, ablation, steps = science.parse(["--steps=40", "--seeds=0,1", "--ablation=", "--out=/tmp/x"])
    assert preset is science.PRESETS["experiment"] and (seeds, ablation, steps) == ([0, 1], [], 40)
    assert args.out == "/tmp/x" and args.doc.endswith("SCIENCE.md")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert "CUDA_VISIBLE_DEVICES" not in science.environment(science.PRESETS["device"], "/tmp/x")
    assert science.environment(preset, "/tmp/x")["CUDA_VISIBLE_DEVICES"] == ""


def test_the_curve_reads_every_checkpoint_and_says_where_retrieval_passes_ten_percent():
    rows = []
    for step, ret in ((400, 0.05), (800, 0.12)):
        rows += [dict(workdir="w", step=step, eval="mlm", language=lang, metric="loss", value=6.0 - step / 1000)
                 for lang in science.languages()]  # fmt: skip
        rows += [dict(workdir="w", step=step, eval="retrieval", language="de", metric="acc_mean", value=ret)]
        rows += [dict(workdir="w", step=step, eval="package", language="en", metric="dev_accuracy",
                      value=v, seed=s) for s, v in ((0, 0.6), (1, 0.8))]  # fmt: skip
        rows += [dict(workdir="w", step=step, eval="package", language="all", metric="chance_uniform", value=0.2)]
    points = science.curve_points(rows, "w", 4096, ["de"])
    assert [p["tokens"] for p in points] == [400 * 4096, 800 * 4096]
    assert points[1]["mlm_loss_mean"] == pytest.approx(5.2) and points[0]["transfer_en_dev"] == pytest.approx(0.7)
    run = dict(name="baseline_tiny_s0", size="tiny", size_args=())
    meta = dict(command="c", date="d", machine="m", minutes=1, flops={"baseline_tiny_s0": 5.3e9})
    text = science.curve_report({"baseline_tiny_s0": points}, [run], meta)
    assert "## baseline_tiny_s0 (size tiny: `tiny`; 5.30 GFLOP a training step)" in text
    assert f"Retrieval first at >= 10 % top-1: {800 * 4096 / 1e6:.2f} M tokens." in text
    assert "| 800 | 3.28 | 5.200 | 0.120 | 0.700 | n/a | 0.200 |" in text  # the chance the sweep reported


def test_the_mini_preset_pairs_both_arms_at_minis_size_and_learning_rate():
    preset = science.PRESETS["mini"]
    run_list = science.runs(list(preset.seeds), list(preset.ablation), preset)
    assert sorted(r["name"] for r in run_list) == [f"{arm}_s{s}" for arm in ("baseline", "xlmp") for s in (0, 1, 2)]
    args = science.run_args(run_list[0], preset, preset.steps)
    assert "--config.train.learning_rate=1e-3" in args and "--config.model.hidden_size=128" in args
    assert "--config.train.steps=3200" in args and not preset.doc.startswith("SCIENCE")


def test_the_curve_sweeps_retrieval_on_dev_pairs_with_equal_chance_in_every_language(monkeypatch):
    from xlmp_jax.evals import heldout

    calls = []
    monkeypatch.setattr(science, "sweep", lambda dirs, out, env, evals, steps, langs=(), settings=(): calls.append(
        (evals, steps, tuple(settings))) or [])  # fmt: skip
    preset = science.PRESETS["curve"]
    run_list = science.runs([0], [], preset)
    science.sweep_all(run_list, {r["name"]: f"/w/{r['name']}" for r in run_list}, "/w", {}, preset, 3200)
    (evals, steps, settings), *more = calls
    assert not more and evals == "mlm,retrieval,package" and steps == "800,1600,2400,3200"
    assert settings[:2] == (
        "--config.retrieval.pairs=transfer_dev",
        f"--config.retrieval.max_pairs={science.DEV_PAIRS}",
    )
    langs = settings[2].split("=", 1)[1].split(",")
    pairs = heldout.transfer_dev_pairs(langs, 0)
    assert len(langs) >= 8 and set(langs) <= set(science.languages())
    assert min(len(english) for english, _ in pairs.values()) >= science.DEV_PAIRS
    science.sweep_all(run_list[:1], {run_list[0]["name"]: "/w/x"}, "/w", {}, science.PRESETS["experiment"], 500)
    assert calls[-1][2] == ()  # the experiment reports retrieval on the held-out pairs


def test_the_ablation_is_swept_apart_on_dev_text_with_the_default_runs_of_its_seeds(monkeypatch):
    calls = []

    def fake_sweep(dirs, out, env, evals, steps, langs=(), settings=()):
        calls.append((dirs, os.path.basename(out), evals, list(langs), tuple(settings)))
        return []

    monkeypatch.setattr(science, "sweep", fake_sweep)
    preset = science.PRESETS["experiment"]
    run_list = science.runs([0, 1], ["old_pool"], preset)
    workdirs = {r["name"]: f"/w/{r['name']}" for r in run_list}
    assert science.sweep_all(run_list, workdirs, "/w", {}, preset, 500) == ([], [])
    dev = science.dev_languages()
    assert calls == [
        (["/w/xlmp_s0", "/w/baseline_s0", "/w/xlmp_s1", "/w/baseline_s1"], "eval", science.EVALS, [], ()),
        (["/w/xlmp_s0", "/w/xlmp_s1", "/w/xlmp_old_pool_s0", "/w/xlmp_old_pool_s1"], "eval_ablation_dev", "mlm,pool",
         dev, science.ABLATION_DEV_SETTINGS),
    ]  # fmt: skip
    assert "en" in dev and "uk" not in dev and set(dev) <= set(science.languages())
    assert "--config.mlm.source=transfer_dev" in science.ABLATION_DEV_SETTINGS


def test_the_ablation_verdict_follows_the_paired_dev_intervals():
    """Variant vs default on dev rows: the paired differences over seeds and the decision they imply."""
    langs = ["de", "en"]
    rows = []
    for seed in range(3):
        for name, loss, ami in ((f"xlmp_s{seed}", 5.0 + 0.1 * seed, 0.5),
                                (f"xlmp_no_diversity_loss_s{seed}", 4.9 + 0.1 * seed, 0.52 + 0.01 * seed),
                                (f"xlmp_small_prompt_init_s{seed}", 5.0 + 0.1 * seed + 0.02 * (seed - 1), 0.5)):  # fmt: skip
            rows += [dict(workdir=f"/w/{name}", eval="mlm", language=lang, metric="loss", value=loss) for lang in langs]
            rows += [dict(workdir=f"/w/{name}", eval="pool", language="all", metric=m, value=v)
                     for m, v in (("ami_prompt_language", ami), ("effective_prompts", 3.0))]  # fmt: skip
    run_list = science.runs([0, 1, 2], ["no_diversity_loss", "small_prompt_init"])
    workdirs = {r["name"]: f"/w/{r['name']}" for r in run_list}
    summary = science.ablation_summary(rows, run_list, workdirs)
    assert summary["languages"] == langs and summary["seeds"] == [0, 1, 2]
    better = summary["variants"]["no_diversity_loss"]
    assert better["paired"]["mlm_loss"]["diff"] == pytest.approx(-0.1)
    assert better["verdict"].startswith("better on dev MLM, routing no worse")
    assert summary["variants"]["small_prompt_init"]["verdict"].startswith("dev MLM interval spans 0")
    worse = science.ablation_verdict(dict(diff_low=0.01, diff_high=0.2), dict(diff_low=-1, diff_high=1))
    assert worse == "worse on dev MLM: keep the default"
    text = "\n".join(science.ablation_table(summary))
    assert "## Ablation on dev text (seeds [0, 1, 2])" in text and "2 languages (de, en;" in text
    assert "| no_diversity_loss | `{'diversity_loss_weight': 0.0}` | 5.000; -0.100 [-0.100, -0.100]" in text
