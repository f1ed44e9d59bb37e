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
