"""`zoo compare`: rows from the cards (units, gains, gap closed), filters that name the valid values, the Pareto
front and the quality-vs-cost plot, the CLI."""
import json

import pytest

import zoo
from zoo.cli import main
from zoo.comparison import comparison_rows, pareto_front, plot, select


def test_rows_carry_units_gains_and_the_gap_closed():
    rows = {r["name"]: r for r in zoo.compare(task="classification", dataset="fashion-mnist")}
    kd = rows["resnet8-kd.fmnist"]
    assert kd["metric"] == "top1" and kd["unit"] == "%" and kd["higher_is_better"] and kd["teacher"] == "resnet56.fmnist"
    card = zoo.card("resnet8-kd.fmnist")
    twin = card.baseline["metrics"]["top1"]["mean"]
    assert kd["gain_over_twin"] == pytest.approx(card.metrics["top1"] - twin)
    assert kd["gap_closed"] == pytest.approx((card.metrics["top1"] - twin) / (card.teacher.metrics["top1"] - twin))
    assert kd["macs"] == card.flops // 2 and kd["latency_ms"] == card.latency_ms["cpu_bs1"]
    assert rows["resnet8.fmnist"]["gain_over_twin"] is None  # the twin itself
    gan = {r["name"]: r for r in zoo.compare(task="gan")}
    assert gan["cyclegan-vintagify"]["higher_is_better"] is False and gan["cyclegan-vintagify"]["unit"] == ""


def test_filters_name_the_valid_values():
    with pytest.raises(ValueError, match="no entry has task 'classifcation'; the tasks are: classification"):
        select(task="classifcation")
    with pytest.raises(ValueError, match="no entry has method 'no-such-method'"):
        select(task="classification", method="no-such-method")
    # each value is checked against every entry: a data set of another task's entries is no typo
    assert select(task="detection", dataset="fashion-mnist") == []


def test_pareto_front_in_both_directions():
    pts = [(1.0, 90.0), (2.0, 92.0), (3.0, 91.0), (4.0, 95.0), (2.0, 89.0)]
    assert pareto_front(pts) == [0, 1, 3]  # (3, 91) is beaten by (2, 92); (2, 89) by (1, 90)
    assert pareto_front([(1.0, 5.0), (2.0, 3.0), (3.0, 4.0)], higher_is_better=False) == [0, 1]


def test_plot_and_cli(tmp_path, capsys):
    rows = comparison_rows(select(task="classification", dataset="fashion-mnist"))
    path = plot(rows, tmp_path / "p.png", "flops")
    assert path.stat().st_size > 10_000
    with pytest.raises(ValueError, match="one task, data set and metric"):
        plot(comparison_rows(select()), tmp_path / "q.png")
    with pytest.raises(ValueError, match="x must be one of"):
        plot(rows, tmp_path / "r.png", "weight")
    assert plot(rows, tmp_path / "noext").name == "noext.png"
    assert (tmp_path / "p.svg").exists() is False and plot(rows, tmp_path / "p.svg").read_text().startswith("<?xml")
    for bad, message in ((tmp_path, "is a folder: give a file name"), (tmp_path / "p.xyz", "cannot write a plot as .xyz"),
                         (tmp_path / "p.png" / "q.png", "a part of its folder is a file")):
        with pytest.raises(ValueError, match=message):
            plot(rows, bad)
    assert main(["compare", "--task", "classification", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["schema_version"] == 1 and {r["name"] for r in out["rows"]} >= {"resnet8-kd.fmnist", "resnet56.fmnist"}
    assert main(["compare", "--task", "nope"]) == 2
    assert "the tasks are" in capsys.readouterr().err


def test_plot_labels_of_points_close_together_do_not_overlap():
    from zoo.comparison import _label_heights

    pts = [(11.69e6, 71.37), (11.69e6, 71.37), (11.7e6, 71.38), (4.2e6, 72.05), (11.69e6, 69.94)]
    h = _label_heights(pts)
    step = 0.045 * (72.05 - 69.94)
    cluster = sorted(h[:3])
    assert all(b - a >= step - 1e-9 for a, b in zip(cluster, cluster[1:]))  # stacked, not overlapping
    assert h[3] == 72.05 and h[4] == 69.94 and min(h[:3]) == 71.37  # alone or lowest: at their own height
