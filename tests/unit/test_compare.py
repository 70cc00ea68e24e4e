"""Runs side by side (issue 27): the shipped checkpoints' recorded histories overlaid on one chart with a legend
naming each, and a table of their best accuracies and the settings in which they differ; the same from the
command line, which also lists a run's snapshots and writes the filters' timeline as a GIF."""

from pathlib import Path

import pytest

from alexnet_core import compare, snapshots
from alexnet_core.train import train
from tests.helpers import run_cli
from tests.unit.test_train import tiny_config, tiny_folder  # noqa: F401  (a fixture)

REPO = Path(__file__).resolve().parents[2]
SHIPPED = [REPO / "checkpoints" / "cifar10.safetensors", REPO / "checkpoints" / "flowers.safetensors"]


def test_two_shipped_runs_overlaid_with_a_legend_naming_both():
    records = [compare.record_of(p) for p in SHIPPED]
    assert [r.name for r in records] == ["cifar10", "flowers"]
    assert all(len(r.history) > 10 for r in records)
    for x in compare.X_AXES:
        figure = compare.comparison_plot(records, x)
        accuracy, loss = figure.axes
        assert [t.get_text() for t in accuracy.get_legend().get_texts()] == ["cifar10", "flowers"]
        assert len(accuracy.lines) == len(loss.lines) == 2
        # Each line is the run's own history: its last point is its last recorded validation.
        last = records[0].history[-1]
        xs, ys = accuracy.lines[0].get_data()
        assert ys[-1] == pytest.approx(last["val_acc"] * 100)
        assert xs[-1] == pytest.approx(last["epoch"] if x == "epoch" else last["wall_time_s"] / 60)
    with pytest.raises(ValueError, match="x axis"):
        compare.comparison_plot(records, "steps")


def test_the_table_has_the_best_accuracies_and_only_the_settings_that_differ():
    records = [compare.record_of(p) for p in SHIPPED]
    headers, rows = compare.table(records)
    differ = compare.differences(records)
    assert headers[4:] == differ and "model" in differ and "lr" in differ
    assert "seed" not in differ and "out" not in differ        # the same in both; where a run was kept
    assert rows[0][1] == f"{records[0].best_val_acc:.2%}"
    assert all(records[0].config.get(k) != records[1].config.get(k) or (k in records[0].config) != (
        k in records[1].config) for k in differ)


def test_the_command_line_compares_and_writes_the_chart(tmp_path):
    out = tmp_path / "chart.png"
    result = run_cli("compare", *map(str, SHIPPED), "--x", "time", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "cifar10" in result.stdout and "flowers" in result.stdout and "best val acc" in result.stdout
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_command_line_lists_a_runs_snapshots_and_writes_the_timeline_gif(tiny_folder, tmp_path):  # noqa: F811
    end = train(tiny_config(tiny_folder, tmp_path / "run", epochs=2))
    gif = tmp_path / "filters.gif"
    result = run_cli("snapshots", end.run_dir, "--gif", str(gif))
    assert result.returncode == 0, result.stderr
    listed = result.stdout.splitlines()[:-1]            # the last line says what was written
    assert len(listed) == len(snapshots.paths(end.run_dir)) == 3
    assert "the start" in listed[0] and "epoch 2" in listed[2] and "val acc" in listed[2]
    assert gif.read_bytes()[:6] == b"GIF89a"
    empty = run_cli("snapshots", str(tmp_path))
    assert empty.returncode == 2 and "has no snapshots" in empty.stderr and "Traceback" not in empty.stderr
