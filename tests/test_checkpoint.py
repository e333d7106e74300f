"""Official-format checkpoints: strict loading, head re-initialisation, clear errors, offline Hub."""
import shutil

import pytest
import torch

from van_edu.errors import VanEduError
from van_edu.models import create_model, load_official_checkpoint, pretrained
from van_edu.models.checkpoint import OFFICIAL_CHECKPOINTS


def write_official(model, path, **extra):
    """A file in the authors' format: the weights under 'state_dict'."""
    torch.save({"state_dict": model.state_dict(), **extra}, path)
    return path


@pytest.fixture(scope="module")
def b0_file(tmp_path_factory):
    torch.manual_seed(0)
    src = create_model("van_b0")
    for m in src.modules():  # non-trivial BatchNorm statistics, so a failed load would show
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.normal_()
            m.running_var.uniform_(0.5, 2.0)
    src.eval()
    path = write_official(src, tmp_path_factory.mktemp("ckpt") / "van_tiny_754.pth.tar")
    return src, path


def test_strict_load_reproduces_the_logits(b0_file):
    src, path = b0_file
    torch.manual_seed(1)
    dst = create_model("van_b0").eval()
    report = load_official_checkpoint(dst, path)
    assert report.loaded == len(src.state_dict()) and not report.missing and not report.unexpected
    x = torch.randn(2, 3, 64, 64)
    torch.testing.assert_close(dst(x), src(x))
    # plain PyTorch strict loading accepts the same file too
    create_model("van_b0").load_state_dict(torch.load(path, weights_only=True)["state_dict"], strict=True)


def test_other_class_count_reinitialises_only_the_head(b0_file):
    src, path = b0_file
    dst = create_model("van_b0", num_classes=10)
    head_before = dst.head.weight.clone()
    report = load_official_checkpoint(dst, path)
    assert "head was not loaded: the class count differs (file 1000, model 10)" in str(report)
    torch.testing.assert_close(dst.head.weight, head_before)
    torch.testing.assert_close(dst.block2[1].attn.spatial_gating_unit.conv_spatial.weight,
                               src.block2[1].attn.spatial_gating_unit.conv_spatial.weight)


def test_a_headless_model_takes_the_backbone_and_says_the_head_was_left_out(b0_file):
    src, path = b0_file
    dst = create_model("van_b0", num_classes=0)
    report = load_official_checkpoint(dst, path)                     # strict: no error for the head
    assert "not loaded: the model has no head (num_classes=0)" in str(report)
    assert report.loaded == len(src.state_dict()) - 2 and not report.missing and not report.unexpected
    x = torch.randn(2, 3, 64, 64)
    src.eval(), dst.eval()
    with torch.no_grad():
        torch.testing.assert_close(dst(x), src.forward_head(src.forward_features(x), pre_logits=True))


def test_wrong_variant_is_reported_in_words(b0_file):
    _, path = b0_file
    with pytest.raises(VanEduError, match="does not fit this model.*shapes differ.*same variant"):
        load_official_checkpoint(create_model("van_b1"), path)


def test_missing_and_unexpected_keys_are_named(tmp_path, b0_file):
    src, _ = b0_file
    sd = dict(src.state_dict())
    sd.pop("block4.1.mlp.fc2.bias")
    sd["extra.weight"] = torch.zeros(1)
    path = tmp_path / "odd.pth.tar"
    torch.save({"state_dict": sd}, path)
    with pytest.raises(VanEduError, match="lacks 1 weights.*block4.1.mlp.fc2.bias.*1 entries.*extra.weight"):
        load_official_checkpoint(create_model("van_b0"), path)
    report = load_official_checkpoint(create_model("van_b0"), path, strict=False)
    assert report.missing == ["block4.1.mlp.fc2.bias"] and report.unexpected == ["extra.weight"]


def test_ddp_prefix_and_bad_files(tmp_path, b0_file):
    src, _ = b0_file
    path = tmp_path / "ddp.pth.tar"
    torch.save({"state_dict": {f"module.{k}": v for k, v in src.state_dict().items()}}, path)
    assert load_official_checkpoint(create_model("van_b0"), path).loaded == len(src.state_dict())
    (tmp_path / "junk.pth.tar").write_bytes(b"not a checkpoint")
    with pytest.raises(VanEduError, match="could not read"):
        load_official_checkpoint(create_model("van_b0"), tmp_path / "junk.pth.tar")
    with pytest.raises(VanEduError, match="does not exist"):
        load_official_checkpoint(create_model("van_b0"), tmp_path / "absent.pth.tar")


def test_pretrained_offline_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(VanEduError, match="could not download van_tiny_754.pth.tar.*offline"):
        pretrained("van_b0", cache_dir=tmp_path)
    with pytest.raises(VanEduError, match="no official checkpoint for 'van_b6'.*van_b0"):
        pretrained("van_b6")


def test_pretrained_from_a_hub_layout_cache(tmp_path, monkeypatch, b0_file):
    """A local cache laid out like the Hub's: pretrained() resolves it offline and loads it."""
    src, path = b0_file
    repo, filename = OFFICIAL_CHECKPOINTS["van_b0"]
    revision = "0" * 40
    root = tmp_path / ("models--" + repo.replace("/", "--"))
    (root / "refs").mkdir(parents=True)
    (root / "refs" / "main").write_text(revision)
    snap = root / "snapshots" / revision
    snap.mkdir(parents=True)
    shutil.copy(path, snap / filename)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = pretrained("van_b0", cache_dir=tmp_path).eval()
    x = torch.randn(1, 3, 64, 64)
    torch.testing.assert_close(model(x), src(x))
    backbone = pretrained("van_b0", cache_dir=tmp_path, features_only=True).eval()   # the same path
    assert "head was not loaded: the model has no head" in str(backbone.load_report)
    with torch.no_grad():
        maps = backbone(x)
        torch.testing.assert_close(maps[-1], src.forward_features(x))                # the last stage, normed
    assert [m.shape[1] for m in maps] == [32, 64, 160, 256]


def write_timm_saver_file(model, path):
    """A file laid out as the authors' released ones are (timm's checkpoint saver): the weights
    under 'state_dict' beside AdamW's state, the epoch, the architecture, a version, the metric
    and the training arguments as an argparse.Namespace."""
    import argparse

    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
    model(torch.randn(2, 3, 32, 32)).logsumexp(1).mean().backward()
    optimizer.step()  # real exp_avg / exp_avg_sq tensors, as in the released files
    model.zero_grad(set_to_none=True)
    args = argparse.Namespace(model="van_b0", lr=1e-3, weight_decay=0.05, epochs=300, drop_path=0.1,
                              mean=[0.5, 0.5, 0.5], std=[0.5, 0.5, 0.5], crop_pct=0.9, mixup=0.8, amp=True)
    torch.save({"epoch": 299, "arch": "van_b0", "state_dict": model.state_dict(),
                "optimizer": optimizer.state_dict(), "version": 2, "metric": 75.4, "args": args}, path)
    return path


@pytest.fixture(scope="module")
def timm_file(tmp_path_factory):
    torch.manual_seed(2)
    src = create_model("van_b0")
    path = write_timm_saver_file(src, tmp_path_factory.mktemp("timm") / "van_tiny_754.pth.tar")
    return src.eval(), path


def test_a_file_in_the_authors_real_layout_loads_strictly_and_says_what_it_skipped(timm_file):
    src, path = timm_file
    with pytest.raises(Exception, match="Namespace"):  # what plain weights_only loading does with it
        torch.load(path, weights_only=True)
    dst = create_model("van_b0").eval()
    report = load_official_checkpoint(dst, path)
    assert report.loaded == len(dst.state_dict()) and not report.missing and not report.unexpected
    assert report.ignored == ["epoch", "arch", "optimizer", "version", "metric", "args"]
    assert "ignored" in str(report) and "optimizer" in str(report)
    x = torch.randn(2, 3, 64, 64)
    bare = create_model("van_b0").eval()
    bare.load_state_dict(src.state_dict(), strict=True)
    torch.testing.assert_close(dst(x), bare(x), rtol=0, atol=0)


def test_any_other_object_in_a_file_is_still_refused(tmp_path, b0_file):
    import datetime

    src, _ = b0_file
    path = tmp_path / "odd_object.pth.tar"
    torch.save({"state_dict": src.state_dict(), "when": datetime.datetime(2022, 2, 20)}, path)
    with pytest.raises(VanEduError, match="holds objects other than tensors.*trust=True"):
        load_official_checkpoint(create_model("van_b0"), path)
    assert load_official_checkpoint(create_model("van_b0"), path, trust=True).loaded == len(src.state_dict())


@pytest.mark.slow
def test_pretrained_finds_an_authors_layout_file_in_an_offline_hub_cache(tmp_path, timm_file):
    """pretrained("van_b0") in a fresh process with HF_HUB_OFFLINE=1 and only a Hub-layout cache."""
    import os
    import subprocess
    import sys

    src, path = timm_file
    repo, filename = OFFICIAL_CHECKPOINTS["van_b0"]
    revision = "1" * 40
    root = tmp_path / "hub" / ("models--" + repo.replace("/", "--"))
    (root / "refs").mkdir(parents=True)
    (root / "refs" / "main").write_text(revision)
    (root / "snapshots" / revision).mkdir(parents=True)
    shutil.copy(path, root / "snapshots" / revision / filename)
    torch.manual_seed(3)
    x = torch.randn(1, 3, 64, 64)
    torch.save({"x": x, "logits": src(x).detach()}, tmp_path / "expected.pt")
    code = ("import torch; from van_edu.models import pretrained; "
            f"e = torch.load({str(tmp_path / 'expected.pt')!r}); m = pretrained('van_b0').eval(); "
            "torch.testing.assert_close(m(e['x']), e['logits']); print('same logits')")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HOME": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "same logits" in done.stdout
