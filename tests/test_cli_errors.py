"""Bad input to the van-edu commands (models, table, train, compare, bench; grade has its own tests):
exit status 2, one line on stderr naming the bad value and what was expected, no traceback, and
nothing written or lost (issue 12, point 5). Every case fails before any training starts."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from data_fixtures import hf_cache, offline, tensor_cache  # noqa: F401 (fixtures: offline, fresh caches)

from van_edu.cli import main

TINY = ["--epochs", "1", "--train-samples", "64", "--test-samples", "64", "--batch-size", "32", "--no-progress"]
FOLDER_RUN = ["--epochs", "1", "--batch-size", "2", "--no-progress"]     # the folders hold a few images
no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")


def error_line(capsys, argv: list[str]) -> str:
    """Run the command in-process; check exit status 2, no traceback and no usage block, and
    return its one line of error (the last on stderr: datasets may draw progress bars above it)."""
    assert main([str(a) for a in argv]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "usage:" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("van-edu")]
    assert len(lines) == 1 and err.rstrip().endswith(lines[0]), err
    prefixes = ("van-edu: error: ",) + ((f"van-edu {argv[0]}: error: ",) if argv else ())
    assert lines[0].startswith(prefixes), err
    return lines[0]


def expect(capsys, argv, *needles) -> str:
    line = error_line(capsys, argv)
    for needle in needles:
        assert needle in line, f"{needle!r} not in {line!r}"
    return line


@pytest.fixture
def afile(tmp_path):
    path = tmp_path / "afile"
    path.write_text("precious")
    return path


# ----------------------------------------------------------------------------- output paths (defect 1)
def test_train_out_an_existing_file_is_refused_before_anything_runs(capsys, afile):
    expect(capsys, ["train", "--out", afile, *TINY], "--out", str(afile), "is a file", "expected a folder")
    expect(capsys, ["train", "--out", afile / "sub", *TINY], "cannot be made", f"{afile} is a file")
    expect(capsys, ["train", "--resume", "--out", afile, *TINY], "is a file")
    assert afile.read_text() == "precious"


def test_compare_out_and_export_are_checked_before_the_first_model_trains(capsys, tmp_path, afile):
    out = tmp_path / "compare"
    expect(capsys, ["compare", "--out", afile, *TINY[:6]], "--out", "is a file")
    expect(capsys, ["compare", "--out", out, "--export", afile, *TINY[:6]], "--export", "is a file")
    expect(capsys, ["compare", "--out", out, "--export", afile / "x", *TINY[:6]], "--export", "cannot be made")
    expect(capsys, ["compare", "--out", out, "--export", out, *TINY[:6]], "--export", "own folder")
    assert afile.read_text() == "precious" and not out.exists()


def test_bench_json_is_checked_before_minutes_of_measuring(capsys, tmp_path, afile):
    expect(capsys, ["bench", "--quick", "--json", afile / "x.json"], "--json", "cannot be made", "is a file")
    expect(capsys, ["bench", "--quick", "--json", tmp_path], "--json", "is a folder", "expected the path of a file")
    expect(capsys, ["bench", "--quick", "--json", os.devnull], "--json", "not a regular file")


def test_the_real_command_prints_one_line_and_exits_2(tmp_path, afile):
    """The installed entry point behaves like main(): one line, status 2 (a subprocess, once)."""
    r = subprocess.run([sys.executable, "-m", "van_edu", "train", "--out", str(afile), *TINY],
                       capture_output=True, text=True, timeout=120,
                       env={**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"})
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines() == [f"van-edu train: error: --out '{afile}' is a file "
                                             "(expected a folder, or a path where one can be made)"]


# ----------------------------------------------------------------------------- datasets (defect 2)
@pytest.fixture
def folders(tmp_path, hf_cache):
    """Image folders a learner might point at: one class, no classes, no test split, a bad file."""
    import numpy as np
    from PIL import Image

    def png(path, side=8):
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((side, side), 128, dtype=np.uint8)).save(path)

    for i in range(4):
        png(tmp_path / "one_class" / "only" / f"{i}.png")
        png(tmp_path / "flat" / f"{i}.png")
        for c in ("cat", "dog"):
            png(tmp_path / "no_test" / c / f"{i}.png")
            png(tmp_path / "corrupt" / "train" / c / f"{i}.png")
            png(tmp_path / "corrupt" / "test" / c / f"{i}.png")
            png(tmp_path / "sizes" / "train" / c / f"{i}.png", side=8 + i)
            png(tmp_path / "sizes" / "test" / c / f"{i}.png", side=8 + i)
    (tmp_path / "corrupt" / "train" / "cat" / "bad.png").write_bytes(b"not a png")
    (tmp_path / "empty").mkdir()
    return tmp_path


def test_a_one_class_folder_says_a_classifier_needs_two_classes(capsys, folders):
    line = expect(capsys, ["train", "--dataset", folders / "one_class", "--out", folders / "out", *FOLDER_RUN],
                  "at least two classes", "one class subfolder ('only')", "FOLDER/<class>/<image>")
    assert "no label column" not in line
    expect(capsys, ["train", "--dataset", folders / "flat", "--out", folders / "out", *FOLDER_RUN],
           "at least two classes", "not in class subfolders")
    assert not (folders / "out").exists()


@pytest.mark.parametrize("folder, needles", [
    ("no_test", ["has no split 'test'", "its splits are: train", "FOLDER/test/"]),
    ("corrupt", ["cannot decode", "bad.png", "expected an image file"]),
    ("sizes", ["different sizes", "--image-size"]),
    ("empty", ["Could not read the dataset folder", "class subfolders"]),
    ("nowhere", ["Unknown dataset", "fashion_mnist", "bundled"]),
    ("one_class/only/0.png", ["is a file", "expected a folder"]),
])
def test_bad_dataset_folders(capsys, folders, folder, needles):
    expect(capsys, ["train", "--dataset", folders / folder, "--out", folders / "out", *FOLDER_RUN], *needles)
    assert not (folders / "out").exists()


# ----------------------------------------------------------------------------- subset sizes (defect 3)
@pytest.mark.parametrize("command", ["train", "compare"])
def test_more_samples_than_the_split_has_is_an_error_not_all_of_it(capsys, tmp_path, command):
    out = ["--out", tmp_path / "out"]
    expect(capsys, [command, *out, "--epochs", "1", "--train-samples", "100000", "--test-samples", "64"],
           "asked for 100000 samples of the 'train' split of 'fashion_mnist', which has 60000",
           "expected a count up to 60000")
    expect(capsys, [command, *out, "--epochs", "1", "--train-samples", "64", "--test-samples", "20000"],
           "asked for 20000 samples of the 'test' split", "which has 10000")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("command", ["train", "compare"])
@pytest.mark.parametrize("option", ["--train-samples", "--test-samples"])
@pytest.mark.parametrize("value", ["0", "0.0", "1.5", "-3", "nan", "inf", "lots"])
def test_bad_subset_sizes_name_the_option(capsys, tmp_path, command, option, value):
    """0 used to mean "the whole split" in compare (a falsy override was dropped)."""
    expect(capsys, [command, option, value, "--out", tmp_path / "out"],
           f"argument {option}", "expected a count like 5000 (at least 1) or a fraction in (0, 1]", repr(value))


# ----------------------------------------------------------------------------- numbers and names
@pytest.mark.parametrize("option, value, expected", [
    ("--epochs", "0", "expected a whole number >= 1"),
    ("--epochs", "-1", "expected a whole number >= 1"),
    ("--epochs", "2.5", "expected a whole number >= 1"),
    ("--batch-size", "0", "expected a whole number >= 1"),
    ("--batch-size", "-5", "expected a whole number >= 1"),
    ("--lr", "0", "expected a finite number > 0"),
    ("--lr", "-1", "expected a finite number > 0"),
    ("--lr", "nan", "expected a finite number > 0"),
    ("--lr", "inf", "expected a finite number > 0"),          # trained to nonsense before
    ("--seed", "-1", "expected a whole number >= 0 and < 2**63"),
    ("--seed", str(2**64), "expected a whole number >= 0 and < 2**63"),   # an OverflowError before
    ("--image-size", "0", "expected a whole number >= 1"),
    ("--image-size", "-3", "expected a whole number >= 1"),
    ("--preset", "nonsense", "invalid choice: 'nonsense' (choose from 'cpu', 'det_cpu', 'gpu', 'seg_cpu')"),
])
def test_train_numbers(capsys, tmp_path, option, value, expected):
    expect(capsys, ["train", option, value, "--out", tmp_path / "out"], f"argument {option}", expected, value)


def test_train_checks_before_loading_the_data(capsys, tmp_path):
    out = ["--out", tmp_path / "out"]
    expect(capsys, ["train", "--model", "van_b9", *out], "unknown model 'van_b9'", "van_mini")
    expect(capsys, ["train", "--device", "gpu", *out], "device='gpu' is not a device name", "'cpu'")
    expect(capsys, ["train", *out, *TINY[:6], "--batch-size", "1000"],
           "batch_size=1000 is larger than the training set (64 images")
    expect(capsys, ["train", "--resume", *out, *TINY], "no checkpoint at", "checkpoint.pt")
    expect(capsys, ["train", "--model", "vit_imagenette", *out, *TINY],
           "image_size 28 must be a multiple of patch_size 16", "--image-size 32")
    assert not (tmp_path / "out").exists()


@no_cuda
@pytest.mark.parametrize("command", ["train", "compare"])
def test_cuda_on_a_machine_without_cuda(capsys, tmp_path, command):
    expect(capsys, [command, "--device", "cuda", "--out", tmp_path / "out"],
           "device='cuda' but no CUDA GPU is visible", "expected 'auto' or 'cpu'")


@pytest.mark.parametrize("argv, needles", [
    (["--models", "a", "b", "c"], ["unknown model 'a'", "choose one of"]),
    (["--models", "van_mini", "vit_mini"], ["argument --models: expected 3 arguments"]),
    (["--models", "van_mini", "van_mini", "resnet_mini"], ["repeat 'van_mini'", "expected distinct models"]),
    (["--seeds"], ["argument --seeds: expected at least one argument"]),
    (["--seeds", "-1"], ["argument --seeds", "expected a whole number >= 0", "'-1'"]),
    (["--seeds", "0", "-1"], ["argument --seeds", "'-1'"]),          # seed 0 trained, then it failed
    (["--seeds", "0", "0"], ["seeds [0, 0] repeat 0", "expected distinct seeds"]),
    (["--epochs", "0"], ["argument --epochs", "expected a whole number >= 1"]),
    (["--device", "nonsense"], ["device='nonsense' is not a device name"]),
    (["--preset", "nonsense"], ["invalid choice: 'nonsense'"]),
])
def test_compare_checks_its_setup_before_the_data(capsys, tmp_path, argv, needles):
    expect(capsys, ["compare", *argv, "--out", tmp_path / "out"], *needles)
    assert not (tmp_path / "out").exists()


def test_compare_checks_every_model_fits_the_data_before_training_one(capsys, tmp_path):
    out = tmp_path / "out"
    expect(capsys, ["compare", "--models", "van_mini", "vit_mini", "van_b0", "--out", out, *TINY[:6]],
           "input 28x28 is too small", "32x32")
    expect(capsys, ["compare", "--models", "van_mini", "vit_imagenette", "resnet_mini", "--out", out, *TINY[:6]],
           "multiple of patch_size 16")
    assert not out.exists()                               # van_mini was not trained first


@pytest.mark.parametrize("argv, needles", [
    (["--variants", "nonsense", "--no-macs"], ["'nonsense' is unknown", "expected VAN variants: van_b0"]),
    (["--variants", "vit_mini", "--no-macs"], ["'vit_mini' is a vit model, not a VAN variant"]),
    (["--resolution", "0"], ["argument --resolution: expected a whole number >= 1, got '0'"]),
    (["--resolution", "-5"], ["argument --resolution", "'-5'"]),       # a RuntimeError before
    (["--resolution", "abc"], ["argument --resolution", "'abc'"]),
    (["--resolution", "16", "--variants", "van_b0"], ["input 16x16 is too small", "32x32"]),
])
def test_table(capsys, argv, needles):
    expect(capsys, ["table", *argv], *needles)


@pytest.mark.parametrize("argv, needles", [
    (["--repeat", "0"], ["argument --repeat: expected a whole number >= 1, got '0'"]),
    (["--repeat", "-1"], ["argument --repeat", "'-1'"]),
    (["--threads", "0"], ["argument --threads", "'0'"]),               # silently ignored before
    (["--threads", "-1"], ["argument --threads", "'-1'"]),             # a RuntimeError before
])
def test_bench_numbers(capsys, argv, needles):
    expect(capsys, ["bench", "--quick", *argv], *needles)


def test_usage_errors_are_one_line(capsys):
    expect(capsys, [], "the following arguments are required: COMMAND", "`van-edu --help`")
    expect(capsys, ["nonsense"], "invalid choice: 'nonsense'")
    expect(capsys, ["models", "extra"], "unrecognized arguments: extra")


def test_help_still_prints_and_exits_0(capsys):
    assert main(["train", "--help"]) == 0
    assert "--train-samples" in capsys.readouterr().out


def test_a_file_system_error_is_one_line(capsys, tmp_path, monkeypatch):
    """An OSError the checks did not foresee (a full disk, a permission) is one line too."""
    import van_edu.compare

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device", str(tmp_path / "x"))

    monkeypatch.setattr(van_edu.compare, "load_splits", full_disk)
    expect(capsys, ["train", "--out", tmp_path / "out"], "No space left on device", str(tmp_path / "x"))


def test_models_lists_every_model(capsys):
    """`van-edu models` stopped at vit_imagenette (28 px is no multiple of its 16 px patches)."""
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "vit_imagenette (160 px)" in out and "vit_mini (28 px)" in out and "van_b6" in out
