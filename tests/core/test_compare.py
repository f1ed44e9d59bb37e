"""der_deploy.compare on hand-made arrays: each statistic, per-output tolerances, NaN/inf, shape and dtype."""
import numpy as np
import pytest

from der_deploy.compare import compare_outputs
from der_deploy.errors import VerificationError


def test_elemwise_uses_atol_plus_rtol_times_ref():
    ref = {"y": np.array([0.0, 100.0], np.float32)}
    # 0.05 error on 0 needs atol >= 0.05; 0.05 on 100 is within rtol 1e-3 * 100 = 0.1
    ok = compare_outputs(ref, {"y": np.array([0.05, 100.05], np.float32)}, atol=0.06, rtol=1e-3)
    bad = compare_outputs(ref, {"y": np.array([0.05, 100.05], np.float32)}, atol=0.04, rtol=1e-3)
    assert ok.passed and not bad.passed
    assert bad["y"].mismatches == 1
    assert bad["y"].max_abs == pytest.approx(0.05, rel=1e-3)


def test_stats_max_mean_median_differ_on_one_outlier():
    ref = {"y": np.zeros(10, np.float32) + 1.0}
    act = {"y": ref["y"].copy()}
    act["y"][0] += 1.0  # one outlier: max abs 1, mean abs 0.1, median abs 0
    kw = dict(atol=0.2, rtol=0.0)
    assert not compare_outputs(ref, act, check_error_stat="max", **kw).passed
    assert compare_outputs(ref, act, check_error_stat="mean", **kw).passed
    assert compare_outputs(ref, act, check_error_stat="median", **kw).passed
    assert not compare_outputs(ref, act, check_error_stat="elemwise", **kw).passed
    r = compare_outputs(ref, act, check_error_stat="mean", **kw)["y"]
    assert (r.max_abs, r.mean_abs, r.median_abs) == pytest.approx((1.0, 0.1, 0.0))
    assert (r.max_rel, r.mean_rel) == pytest.approx((1.0, 0.1))


def test_stat_passes_when_rel_within_rtol_even_if_abs_exceeds():
    ref = {"y": np.array([1000.0, 2000.0])}
    act = {"y": np.array([1001.0, 2002.0])}  # abs mean 1.5, rel mean 1e-3
    assert compare_outputs(ref, act, atol=0.1, rtol=2e-3, check_error_stat="mean").passed
    assert not compare_outputs(ref, act, atol=0.1, rtol=5e-4, check_error_stat="mean").passed


def test_per_output_tolerances_and_stats_with_default():
    ref = {"a": np.ones(4, np.float32), "b": np.ones(4, np.float32)}
    act = {"a": ref["a"] + 0.01, "b": ref["b"] + 0.01}
    res = compare_outputs(ref, act, atol={"a": 0.02, "*": 0.001}, rtol=0.0, check_error_stat={"a": "max", "b": "mean"})
    assert res["a"].passed and res["a"].stat == "max"
    assert not res["b"].passed and res["b"].stat == "mean"
    assert not res.passed
    with pytest.raises(ValueError):
        compare_outputs(ref, act, atol={"a": 0.1})  # no value for b and no "*"


def test_nan_inf_shape_dtype_missing():
    ref = {"y": np.array([1.0, np.inf], np.float32)}
    assert compare_outputs(ref, {"y": np.array([1.0, np.inf], np.float32)}).passed
    assert "inf" in compare_outputs(ref, {"y": np.array([1.0, -np.inf], np.float32)})["y"].reason
    assert "NaN" in compare_outputs(ref, {"y": np.array([np.nan, np.inf], np.float32)})["y"].reason
    assert "shape" in compare_outputs(ref, {"y": np.ones(3, np.float32)})["y"].reason
    assert "dtype" in compare_outputs(ref, {"y": np.array([1.0, np.inf], np.float64)})["y"].reason
    res = compare_outputs(ref, {})
    assert res["y"].reason == "output missing" and not res.passed


def test_rows_table_and_raise():
    ref = {"logits": np.zeros((2, 3), np.float32), "scores": np.full((2, 3), 0.5, np.float32)}
    act = {"logits": ref["logits"] + 1.0, "scores": ref["scores"], "extra": np.zeros(1)}
    res = compare_outputs(ref, act, atol=1e-3, rtol=0.0)
    rows = res.rows()
    assert [r[0] for r in rows] == ["logits", "scores"]
    assert rows[0][-1].startswith("FAIL") and rows[1][-1] == "pass"
    assert len(rows[0]) == len(res.COLUMNS)
    assert res.table("t").row_count == 2
    with pytest.raises(VerificationError, match="logits"):
        res.raise_if_failed("model.onnx")
    assert compare_outputs(ref, ref).raise_if_failed("x").passed
    assert not compare_outputs({}, {}).passed  # nothing compared is not a pass


# --- the scale-aware bound (issue 17): rounding error follows the row's magnitude, not each element's ---------------
FP32_LIKE = dict(atol=1e-4, rtol=1e-3, check_error_stat="elemwise", scale_tol=2e-5)


def test_scale_tol_accepts_rounding_error_on_a_near_zero_logit_of_a_large_row():
    # An untrained ResNet-101: logits up to 7e4, FP32 error ~1e-6 of that on every logit, even one near 0.
    ref = {"logits": np.array([[7e4, -3e4, 0.01, 12.0]], np.float32)}
    act = {"logits": ref["logits"] + np.array([[0.05, -0.03, 0.05, -0.04]], np.float32)}
    assert not compare_outputs(ref, act, atol=1e-4, rtol=1e-3).passed  # the fixed bound refuses it
    res = compare_outputs(ref, act, **FP32_LIKE)
    assert res.passed, res["logits"].reason
    assert res["logits"].max_scaled == pytest.approx(0.05 / 7e4, rel=1e-2)
    # ... but an error of 1e-3 of the scale is a wrong model, not rounding.
    act["logits"][0, 2] += 70.0
    bad = compare_outputs(ref, act, **FP32_LIKE)["logits"]
    assert not bad.passed and bad.mismatches == 1 and "scale_tol*scale" in bad.reason


def test_scale_is_per_sample_not_per_output():
    # Row 0 is large, row 1 small: row 1's near-zero logit gets no slack from row 0's magnitude.
    ref = {"logits": np.array([[5e4, -2e4, 3.0], [1.5, -0.7, 0.001]], np.float32)}
    act = {"logits": ref["logits"] + np.float32(0.03)}
    res = compare_outputs(ref, act, **FP32_LIKE)["logits"]
    assert not res.passed and res.mismatches == 3  # the whole small row, none of the large one
    act["logits"][1] = ref["logits"][1]
    assert compare_outputs(ref, act, **FP32_LIKE).passed


def test_scale_of_takes_another_outputs_row_scale():
    logits = np.array([[4e4, -4e4, 0.0], [2.0, -1.0, 0.0]], np.float32)
    scores = (0.5 + 0.5 * np.tanh(logits.astype(np.float64) / 2)).astype(np.float32)  # sigmoid without overflow
    ref = {"logits": logits, "scores": scores}
    act = {"logits": logits.copy(), "scores": scores.copy()}
    act["scores"][0, 2] += np.float32(0.01)  # a logit error of 0.04 near 0 moves the score by 0.01
    kw = dict(atol={"logits": 1e-4, "scores": 1e-5}, rtol=1e-3, scale_tol=2e-5)
    assert not compare_outputs(ref, act, **kw).passed  # scores' own scale is <= 1
    res = compare_outputs(ref, act, **kw, scale_of={"scores": ("logits", 0.25)})
    assert res.passed, res["scores"].reason
    act["scores"][1, 2] += np.float32(0.01)  # the small row's logits give no such slack
    assert not compare_outputs(ref, act, **kw, scale_of={"scores": ("logits", 0.25)})["scores"].passed
    # Without the named output (a subset of outputs) the output's own scale is used.
    only = compare_outputs({"scores": scores}, {"scores": act["scores"]}, **kw, scale_of={"scores": ("logits", 0.25)})
    assert not only.passed


def test_statistics_also_pass_on_the_scaled_error():
    ref = {"y": np.array([[3e4, -2e4, 5.0, -1.0]] * 4)}
    act = {"y": ref["y"] + 30.0}  # mean abs 30, mean rel dominated by the small entries: both fail
    kw = dict(atol=0.05, rtol=0.02, check_error_stat="mean")
    assert not compare_outputs(ref, act, **kw).passed
    r = compare_outputs(ref, act, **kw, scale_tol=2e-3)["y"]
    assert r.passed and r.mean_scaled == pytest.approx(1e-3)
    failed = compare_outputs(ref, act, **kw, scale_tol=5e-4)["y"]
    assert not failed.passed and "mean scaled 0.001 > 0.0005" in failed.reason


def test_scale_tol_zero_or_unnamed_keeps_the_fixed_bound():
    ref = {"a": np.array([[1e4, 0.0]]), "b": np.array([[1e4, 0.0]])}
    act = {"a": np.array([[1e4, 0.05]]), "b": np.array([[1e4, 0.05]])}
    res = compare_outputs(ref, act, scale_tol={"a": 1e-5})  # "b" not named and no "*": no scale term
    assert res["a"].passed and not res["b"].passed and res["b"].scale_tol == 0.0
    assert res.rows()[0][2] == "elemwise 0.0001/0.001/1e-05" and res.rows()[1][2] == "elemwise 0.0001/0.001"
    with pytest.raises(ValueError, match="scale_tol"):
        compare_outputs(ref, act, scale_tol=-1.0)
    # inf entries do not set the scale of their row.
    inf_ref = {"y": np.array([[np.inf, 1.0, 0.0]])}
    assert not compare_outputs(inf_ref, {"y": np.array([[np.inf, 1.0, 0.05]])}, scale_tol=1e-5).passed
