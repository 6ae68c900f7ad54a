"""bench.science's statistics and report (the experiment itself is a committed command, not a test)."""

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
    assert [r["name"] for r in runs] == ["xlmp_s0", "baseline_s0", "xlmp_s1", "baseline_s1", "xlmp_old_pool_s0"]
    assert runs[1]["config"] == "configs/tiny_baseline.py" and runs[1]["pool"] == {}
    assert runs[-1]["pool"]["key_loss_weight"] == 0.0 and runs[-1]["seed"] == 0
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
