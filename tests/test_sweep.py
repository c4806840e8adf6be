"""The sweep: records per point, resume without duplicates after a kill, plots and table written."""

import json

from ponder.eval.sweep import RESULTS, merged, read_records, sweep
from ponder.report.plots import pareto_plot, results_table

SMALL = dict(windows=1, window_len=64, calibration_tokens=1024, progress=False)


def points(records):
    return sorted((r["method"], r["budget"]) for r in records if "perplexity" in r)


def test_sweep_records_resume_and_report(saved_model, tmp_path):
    out = tmp_path / "sweep"
    records = sweep(str(saved_model), ["teal", "cats"], [1.0, 0.5, 0.3], out, **SMALL)
    assert points(records) == [
        ("cats", 0.5),
        ("cats", 1.0),
        ("dense", 1.0),
        ("teal", 0.3),
        ("teal", 0.5),
        ("teal", 1.0),
    ]
    skipped = [r for r in records if "skipped" in r]
    assert [(r["method"], r["budget"]) for r in skipped] == [("cats", 0.3)]
    dense = next(r for r in records if r["method"] == "dense")
    teal_full = next(r for r in records if r["method"] == "teal" and r["budget"] == 1.0)
    assert teal_full["perplexity"] == dense["perplexity"]  # exact at full budget

    # A kill mid-write leaves half a line: that point is redone, nothing is duplicated.
    lines = (out / RESULTS).read_text().splitlines()
    (out / RESULTS).write_text("\n".join(lines[:-1]) + "\n" + lines[-1][:20])
    again = sweep(str(saved_model), ["teal", "cats"], [1.0, 0.5, 0.3], out, **SMALL)
    assert points(again) == points(records)
    assert points(read_records(out)) == points(records)

    rows = merged(read_records(out))
    paths = pareto_plot(rows, out / "report")
    assert all(p.stat().st_size > 1000 for p in paths)
    table = results_table(rows)
    assert "| teal | 0.50 |" in table and "skipped" in table


def test_records_are_json_lines(saved_model, tmp_path):
    sweep(str(saved_model), ["predictor"], [0.6], tmp_path, **SMALL)
    for line in (tmp_path / RESULTS).read_text().splitlines():
        record = json.loads(line)
        assert {"method", "budget"} <= record.keys()


def test_sweep_adds_task_accuracy_to_finished_points(saved_model, tmp_path):
    sweep(str(saved_model), ["teal"], [1.0, 0.5], tmp_path, **SMALL)
    before = read_records(tmp_path)
    records = sweep(str(saved_model), ["teal"], [1.0, 0.5], tmp_path, task="piqa", task_limit=4, **SMALL)
    added = records[len(before) :]
    assert sorted((r["method"], r["budget"]) for r in added) == [("dense", 1.0), ("teal", 0.5), ("teal", 1.0)]
    assert all("perplexity" not in r and r["task_n"] == 4 for r in added)  # perplexity was not run again
    rows = {(r["method"], r["budget"]): r for r in merged(read_records(tmp_path))}
    assert rows["teal", 1.0]["acc"] == rows["dense", 1.0]["acc"]
    assert rows["teal", 0.5]["task_ffn_compute"] < 0.8 < rows["dense", 1.0]["task_ffn_compute"]
    paths = pareto_plot(list(rows.values()), tmp_path / "report")
    assert "task accuracy" in paths[1].read_text()  # the accuracy panel is drawn
    assert "| teal | 0.50 |" in results_table(list(rows.values()))


def test_sweep_method_variants(saved_model, tmp_path):
    import pytest

    from ponder.errors import PonderError

    records = sweep(str(saved_model), ["teal+greedy"], [0.5], tmp_path, **SMALL)
    assert ("teal+greedy", 0.5) in points(records)
    config = json.loads((tmp_path / "models" / "teal+greedy" / "ponder_config.json").read_text())
    assert config["method"] == "teal" and config["calibration"]["allocation"] == "greedy"
    with pytest.raises(PonderError, match="allocation 'best' is unknown"):
        sweep(str(saved_model), ["teal+best"], [0.5], tmp_path, **SMALL)


def test_sweep_variants_share_one_conversion_per_options(saved_model, tmp_path):
    """`moe@top-p` reuses `moe`'s converted model with another policy; options make a separate conversion."""
    out = tmp_path / "sweep"
    small = "moe:experts=16:shared_experts=2:steps=50"
    specs = [small, f"{small}@top-k", f"{small}:pseudo_experts=none"]
    records = sweep(str(saved_model), specs, [0.5], out, **SMALL)
    assert sorted(p.name for p in (out / "models").iterdir()) == sorted([small, f"{small}:pseudo_experts=none"])
    by_method = {r["method"]: r for r in records if "perplexity" in r}
    assert set(by_method) == {"dense", *specs}
    assert by_method[small]["perplexity"] != by_method[f"{small}@top-k"]["perplexity"]  # the policy applied


def test_sweep_rejects_bad_variants_before_work(saved_model, tmp_path):
    import pytest

    from ponder.errors import PonderError

    for spec, message in [
        ("moe@top-q", "unknown routing policy"),
        ("teal:wings=2", "no option"),
        ("teal+lazy", "allocation"),
    ]:
        with pytest.raises(PonderError, match=message):
            sweep(str(saved_model), [spec], [0.5], tmp_path / "never", **SMALL)
    assert not (tmp_path / "never" / "models").exists()
