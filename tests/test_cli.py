"""The `zoo` CLI and its stable --json schema, on the bundled Fashion-MNIST entries."""
import json
import subprocess
import sys

import pytest

from zoo import cli
from zoo.cli import LIST_FIELDS

STUDENT = "resnet20.fmnist"


def run_json(capsys, *argv):
    code = cli.main(list(argv))
    out = capsys.readouterr().out
    return code, json.loads(out)


def test_list_json_schema(capsys):
    code, data = run_json(capsys, "list", "--json")
    assert code == 0 and data["schema_version"] == 1
    by_name = {m["name"]: m for m in data["models"]}
    assert {"resnet20.fmnist", "resnet32.fmnist", "resnet56.fmnist"} <= set(by_name)
    for m in data["models"]:
        assert tuple(m) == LIST_FIELDS
    m = by_name[STUDENT]
    assert m["task"] == "classification" and m["dataset"] == "fashion-mnist" and m["split"] == "test"
    assert 0.5 < m["metrics"]["top1"] <= 1 and m["params"] == 269434


def test_json_errors_are_json_on_stdout(capsys):
    """Under --json a failed command still writes one JSON object to stdout (the error), with the exit status
    and the stderr message of the plain command."""
    code, data = run_json(capsys, "card", "no-such-entry", "--json")
    assert code == 2 and data["schema_version"] == 1
    assert data["error"]["command"] == "card" and "no zoo entry named 'no-such-entry'" in data["error"]["message"]
    code, data = run_json(capsys, "list", "--method", "bogus", "--json")
    assert code == 2 and data["error"]["type"] == "ValueError" and "no entry has method 'bogus'" in data["error"]["message"]
    code, data = run_json(capsys, "list", "--task", "bogus", "--json")  # (it printed nothing on stdout)
    assert code == 2 and "unknown task 'bogus'; the tasks are: classification" in data["error"]["message"]
    assert cli.main(["card", "no-such-entry"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "zoo card: error: no zoo entry named" in captured.err  # plain: stderr only


def test_list_filters(capsys):
    code, data = run_json(capsys, "list", "--task", "face", "--method", "kd", "--json")
    assert code == 0 and data["models"] == []  # a known task with no match: an empty list, not an error
    code, data = run_json(capsys, "list", "--task", "face", "--json")
    assert code == 0 and {m["name"] for m in data["models"]} >= {"face-resnet8-proxyless-kd.cjk-fonts"}
    code, data = run_json(capsys, "list", "--task", "detection", "--json")
    assert code == 0 and data["models"] and all(m["task"] == "detection" for m in data["models"])
    cli.main(["list", "--task", "classification"])
    assert STUDENT in capsys.readouterr().out
    assert cli.main(["list", "--task", "nosuch"]) == 2  # an unknown task, not an empty list
    assert "the tasks are: classification, detection, face" in capsys.readouterr().err
    assert cli.main(["list", "--method", "nosuch"]) == 2  # as in zoo compare: a typo is not an empty list
    assert "no entry has method 'nosuch'; the methods are:" in capsys.readouterr().err


def test_list_and_compare_add_checkpoints_of_ones_own(capsys, tmp_path, tiny_model):
    import zoo
    from conftest import make_card

    zoo.save(tiny_model, tmp_path / "mine" / "folder-a", make_card(tiny_model, name="resnet8.mine"))
    zoo.save(tiny_model, tmp_path / "mine" / "folder-b", make_card(tiny_model, name="resnet8-kd.mine", method="kd"))
    assert cli.main(["list", "--add", str(tmp_path / "mine"), "--dataset", "fashion-mnist"]) == 0
    out = capsys.readouterr().out
    assert "resnet8.fmnist" in out  # beside the zoo's own entries, each named by its folder
    assert any(line.startswith("resnet8-kd.mine") and line.endswith(str(tmp_path / "mine" / "folder-b"))
               for line in out.splitlines())
    code, data = run_json(capsys, "compare", "--add", str(tmp_path / "mine" / "folder-a"), "--json")
    assert code == 0 and "resnet8.mine" in {r["name"] for r in data["rows"]}
    (tmp_path / "empty").mkdir()
    assert cli.main(["compare", "--add", str(tmp_path / "empty")]) == 2
    assert "no checkpoint folder (one with a README.md card) in it" in capsys.readouterr().err
    # a run of one's own named as the shipped entry it reproduces joins beside it, named by its folder (it was
    # refused: every segmentation and detection run of a shipped recipe takes the shipped name)
    zoo.save(tiny_model, tmp_path / "clash", make_card(tiny_model, name="resnet8.fmnist"))
    zoo.save(tiny_model, tmp_path / "other" / "clash", make_card(tiny_model, name="resnet8.fmnist", method="kd"))
    code, data = run_json(capsys, "list", "--add", str(tmp_path / "clash"), "--add", str(tmp_path / "other" / "clash"),
                          "--json")
    names = {m["name"] for m in data["models"]}
    assert code == 0 and {"resnet8.fmnist", "resnet8.fmnist+clash", "resnet8.fmnist+other-clash"} <= names
    assert zoo.card("resnet8.fmnist").extra and not zoo.card("resnet8.fmnist+clash").extra  # the shipped one kept
    # folders whose names differ only in punctuation were merged or dropped silently (a breaker pass)
    for i, folder in enumerate(["x y", "x.y", "x-y", "日本"]):
        zoo.save(tiny_model, tmp_path / "p" / folder, make_card(tiny_model, name="resnet8.fmnist", method=f"m{i}"))
    code, data = run_json(capsys, "list", "--add", str(tmp_path / "p"), "--json")
    added = {m["name"]: m["method"] for m in data["models"] if m["method"] in ("m0", "m1", "m2", "m3")}
    assert code == 0 and sorted(added.values()) == ["m0", "m1", "m2", "m3"] and not any(n.endswith("+") for n in added)


def test_card_json_and_text(capsys):
    code, data = run_json(capsys, "card", STUDENT, "--json")
    assert code == 0 and data["card"]["name"] == STUDENT
    assert data["card"]["training"]["command"].startswith("zoo train classification --arch resnet20")
    cli.main(["card", STUDENT])
    assert "Reproduce with" in capsys.readouterr().out


def test_unknown_name_exits_2_with_suggestions(capsys):
    assert cli.main(["card", "resnet20.fmnst"]) == 2
    err = capsys.readouterr().err
    assert "Did you mean: resnet20.fmnist" in err


def test_a_missing_checkpoint_folder_is_named_as_a_folder(capsys, tmp_path):
    """A path that does not exist said only "no zoo entry named ..." (found by a fresh-user pass)."""
    missing = tmp_path / "runs" / "teacher"
    assert cli.main(["card", str(missing)]) == 2
    assert f"It is no checkpoint folder either: {missing} does not exist" in capsys.readouterr().err


def test_predict_default_samples_json(capsys):
    code, data = run_json(capsys, "predict", STUDENT, "--json", "--top-k", "2")
    assert code == 0
    preds = data["predictions"]
    assert len(preds) == 10
    # the bundled samples are named after their true class; a trained student gets most of them right
    correct = sum(p["input"].split("/")[-1].split("-")[0] == str(p["index"]) for p in preds)
    assert correct >= 8


def test_predict_text_output_lists_the_top_k(capsys):
    assert cli.main(["predict", STUDENT, "--top-k", "3"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 10 and all(line.count("(") == 3 for line in lines)


def test_predict_bad_input_is_a_clear_error(capsys, tmp_path, monkeypatch):
    assert cli.main(["predict", STUDENT, str(tmp_path / "nope.png")]) == 2
    assert "no image file" in capsys.readouterr().err
    for bad in ("0", "-2", "x"):  # the option is named, not the Python parameter behind it
        with pytest.raises(SystemExit) as exit_:
            cli.main(["predict", STUDENT, "--top-k", bad])
        assert exit_.value.code == 2 and "argument --top-k" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:  # an empty folder name saved nothing, silently
        cli.main(["predict", STUDENT, "--save", ""])
    assert exit_.value.code == 2 and "argument --save: must name a folder" in capsys.readouterr().err
    (tmp_path / "a-file").write_text("x")
    import zoo

    calls = []

    def load(*args, **kwargs):
        calls.append(args)
        raise ValueError("(the model would load here)")

    monkeypatch.setattr(zoo, "load", load)
    # refused before the model is loaded and run
    assert cli.main(["predict", "lraspp-resnet8.fmnist-scenes", "--save", str(tmp_path / "a-file")]) == 2
    assert f"--save {tmp_path / 'a-file'} is a file, not a folder" in capsys.readouterr().err and calls == []
    assert cli.main(["predict", "lraspp-resnet8.fmnist-scenes", "--save", str(tmp_path / "new")]) == 2
    assert "(the model would load here)" in capsys.readouterr().err  # a folder to be made passes the check
    assert calls and not (tmp_path / "new").exists()  # and the check creates nothing


def test_eval_reproduces_the_card(capsys):
    code, data = run_json(capsys, "eval", STUDENT, "--json")
    assert code == 0 and data["within_tolerance"] is True
    assert abs(data["measured"]["top1"] - data["card"]["top1"]) <= 0.003
    assert set(data) == {"schema_version", "name", "task", "dataset", "split", "card", "measured", "delta",
                         "tolerance", "within_tolerance"}


def test_console_script_is_installed():
    out = subprocess.run([sys.executable, "-m", "zoo.cli", "list"], capture_output=True, text=True, check=True).stdout
    assert STUDENT in out


def test_listing_and_reading_cards_do_not_import_torch():
    """`import zoo`, `zoo list`, `zoo card` and `zoo.compare` read cards only: they must not pay torch's
    import (seconds) — scripts call `zoo card` once per entry. Run in a fresh interpreter."""
    code = ("import sys, zoo\n"
            "from zoo import cli\n"
            "names = [c.name for c in zoo.list_models()]\n"
            "assert 'resnet8-kd.fmnist' in names and zoo.card('resnet8-kd.fmnist').baseline\n"
            "zoo.compare(task='classification')\n"
            "for argv in (['list'], ['list', '--json'], ['card', 'resnet8-kd.fmnist', '--json'], ['card', 'resnet8.fmnist']):\n"
            "    assert cli.main(argv) == 0\n"
            "heavy = sorted(m for m in ('torch', 'numpy', 'safetensors.torch') if m in sys.modules)\n"
            "assert not heavy, heavy\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]


def test_every_subcommand_says_what_it_does_and_what_each_option_means():
    """`zoo eval --help` once showed bare option names; each subcommand's --help now has a description
    and every option (task runs aside: their options are the task's own) a help text."""
    import argparse

    parser = cli.build_parser()
    subs = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    bare = []
    for name, sub in subs.choices.items():
        if not sub.description:
            bare.append(f"zoo {name}: no description")
        for action in sub._actions:
            if action.help is None and not isinstance(action, argparse._HelpAction):
                bare.append(f"zoo {name} {action.option_strings or action.dest}: no help")
    assert not bare, "\n".join(bare)


def test_every_time_budget_refuses_what_is_not_minutes(capsys):
    """One shared --time-budget (zoo.cli.add_time_budget) in the benchmarks and task CLIs: nan, inf and
    negatives are refused before any work starts; 0 and 1.5 are minutes."""
    import argparse

    import pytest

    from zoo.cli import add_time_budget, deadline_in

    p = argparse.ArgumentParser(prog="x")
    add_time_budget(p)
    for bad in ("nan", "inf", "-1", "soon"):
        with pytest.raises(SystemExit):
            p.parse_args(["--time-budget", bad])
        assert "--time-budget" in capsys.readouterr().err
    assert p.parse_args(["--time-budget", "1.5"]).time_budget == 1.5 and p.parse_args([]).time_budget is None
    assert deadline_in(None) is None
    import time
    assert 59 < deadline_in(1.0) - time.monotonic() <= 60


def test_eval_refuses_a_bad_device_or_tolerance_in_one_line(capsys):
    """zoo eval --device cuda on a machine without CUDA, an unknown device and a negative tolerance were a torch
    traceback and a run that called every metric a drift (found by a fresh-user pass); now argparse errors."""
    import pytest
    import torch

    bad = [["--device", "bogus"], ["--tolerance", "-1"], ["--tolerance", "nan"]]
    if not torch.cuda.is_available():
        bad.append(["--device", "cuda"])
    for args in bad:
        with pytest.raises(SystemExit) as e:
            cli.main(["eval", "resnet8.fmnist", *args])
        assert e.value.code == 2
        err = capsys.readouterr().err
        assert f"argument {args[0]}" in err and "Traceback" not in err


def test_eval_refuses_a_data_root_that_is_not_a_folder(capsys, tmp_path):
    """A missing --data-root evaluated silently on the cached detection scenes (found by a fresh-user pass)."""
    code = cli.main(["eval", "resnet8.fmnist", "--data-root", str(tmp_path / "nope")])
    err = capsys.readouterr().err
    assert code == 2 and "nope: no such folder" in err
    (tmp_path / "a.png").write_bytes(b"x")
    assert cli.main(["eval", "resnet8.fmnist", "--data-root", str(tmp_path / "a.png")]) == 2
    assert "a.png: a file, not a folder" in capsys.readouterr().err


def test_an_unknown_option_is_reported_with_the_subcommands_usage(capsys):
    """argparse names unknown options under the top-level usage; `zoo eval NAME --bogus` should show eval's."""
    import pytest

    with pytest.raises(SystemExit) as e:
        cli.main(["eval", "resnet8.fmnist", "--bogus"])
    err = capsys.readouterr().err
    assert e.value.code == 2
    assert "usage: zoo eval" in err and "unrecognized arguments: --bogus" in err


@pytest.mark.parametrize("item", ["lr", "=0.1", " =1"])
def test_a_malformed_set_is_a_usage_error(item, capsys):
    """`--set lr` (no '=') or an empty key: exit status 2 with the message, as argparse's usage errors (it was 1)."""
    with pytest.raises(SystemExit) as stop:
        cli.parse_overrides([item])
    assert stop.value.code == 2 and "--set expects key=value" in capsys.readouterr().err
    assert cli.parse_overrides(["lr=0.1", "nesterov=false", "name=x=y"]) == {"lr": 0.1, "nesterov": False, "name": "x=y"}


@pytest.mark.parametrize("task", ["classification", "segmentation"])
def test_train_refuses_a_bad_device_an_empty_out_and_a_resume_of_nothing(task, capsys, tmp_path):
    """Found by a breaker pass: `--device banana` was a torch traceback, `--out ''` trained into the working
    directory, and `--resume` of a missing folder made it and started a new run there."""
    arch = "resnet8" if task == "classification" else "lraspp-resnet8"
    for args in (["--out", str(tmp_path / "a"), "--device", "banana"], ["--out", ""], ["--out", " "]):
        with pytest.raises(SystemExit) as stop:
            cli.main(["train", task, "--arch", arch, *args])
        err = capsys.readouterr().err
        assert stop.value.code == 2 and "Traceback" not in err
        assert ("'banana' is not a torch device" in err) or ("the run folder is empty" in err)
    assert cli.main(["train", task, "--arch", arch, "--out", str(tmp_path / "gone"), "--resume", "--max-steps", "1"]) == 2
    assert "--resume: there is no run in" in capsys.readouterr().err and not (tmp_path / "gone").exists()
    (tmp_path / "empty").mkdir()
    assert cli.main(["train", task, "--arch", arch, "--out", str(tmp_path / "empty"), "--resume", "--max-steps", "1"]) == 2
    assert "(an empty folder)" in capsys.readouterr().err and not any((tmp_path / "empty").iterdir())  # no run.json
    assert not (tmp_path / "a").exists()


def test_classification_flags_and_set_that_disagree_are_refused(capsys, tmp_path):
    """`--batch-size 8 --set batch_size=16` silently trained with 8, unlike the generic runner's flags."""
    out = tmp_path / "run"
    assert cli.main(["train", "classification", "--arch", "resnet8", "--out", str(out), "--batch-size", "8",
                     "--set", "batch_size=16"]) == 2
    assert "--batch-size 8 and --set batch_size=16 disagree" in capsys.readouterr().err and not out.exists()
