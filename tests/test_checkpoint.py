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
    assert report.head_reset and "re-initialised" in str(report)
    torch.testing.assert_close(dst.head.weight, head_before)
    torch.testing.assert_close(dst.block2[1].attn.spatial_gating_unit.conv_spatial.weight,
                               src.block2[1].attn.spatial_gating_unit.conv_spatial.weight)


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
