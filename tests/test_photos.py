"""The course's photographs, ImageNet's class names, and notebook 08's section on the authors'
VAN-B0, run as the notebook runs it: with the weights in a Hub-layout cache (where the checkpoint is
available) and without them (offline, as here)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from van_edu.data import imagenet_classes, load_photos, normalize, photo_credits
from van_edu.errors import VanEduError
from van_edu.models import create_model, pretrained
from van_edu.models.checkpoint import OFFICIAL_CHECKPOINTS

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "08_looking_inside.ipynb"


def test_the_photographs_load_as_the_authors_evaluated():
    photos = load_photos()
    assert photos.images.dtype == torch.uint8 and list(photos.images.shape) == [2, 3, 224, 224]
    assert photos.classes == [c["shows"] for c in photo_credits()] == ["Chelsea the cat", "a cup of coffee"]
    assert photos.labels.tolist() == [0, 1]
    assert all("CC0" in c["credit"] and (ROOT / "data" / "photos" / c["file"]).is_file() for c in photo_credits())
    # crop 0.9: resized to floor(224 / 0.9) = 248, then the centre 224 (12 pixels off each side)
    whole = load_photos(image_size=248, crop=1.0).images
    assert torch.equal(photos.images, whole[:, :, 12:236, 12:236])
    assert not torch.equal(photos.images, load_photos(image_size=224, crop=1.0).images)
    assert photos.images.float().std() > 30                        # a photograph, not a flat square
    x = normalize(photos.images)
    assert -1 <= float(x.min()) < -0.9 and 0.9 < float(x.max()) <= 1


def test_bad_photo_arguments_and_a_missing_folder_say_what_was_expected(tmp_path):
    with pytest.raises(VanEduError, match="0 < crop <= 1"):
        load_photos(crop=1.5)
    with pytest.raises(VanEduError, match="image_size >= 1"):
        load_photos(image_size=0)
    with pytest.raises(VanEduError, match="no photographs in .*credits.json"):
        load_photos(folder=tmp_path)


def test_imagenet_class_names_are_in_the_classifiers_order():
    names = imagenet_classes()
    assert len(names) == 1000
    assert names[0] == "tench" and names[281] == "tabby" and names[967] == "espresso" and names[999] == "toilet tissue"
    assert len(set(names)) >= 998                                   # ImageNet repeats two names (crane, maillot)


def test_pretrained_without_download_looks_only_in_the_cache(tmp_path, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)             # even with the network allowed
    with pytest.raises(VanEduError, match="not in the local Hugging Face cache.*download=False"):
        pretrained("van_b0", cache_dir=tmp_path, download=False)


def section_four() -> str:
    """The code cells of notebook 08's section 4, joined in order."""
    cells = json.loads(NOTEBOOK.read_text())["cells"]
    start = next(i for i, c in enumerate(cells) if "".join(c["source"]).startswith("## 4 ·"))
    end = next(i for i, c in enumerate(cells) if "".join(c["source"]).startswith("## Check your understanding"))
    return "\n".join("".join(c["source"]) for c in cells[start:end] if c["cell_type"] == "code")


def run_section_four(tmp_path, hub_cache: Path) -> subprocess.CompletedProcess:
    preamble = ("import matplotlib; matplotlib.use('Agg'); import torch; "
                "from van_edu.notebook import QUICK; DEVICE = torch.device('cpu')\n")
    tail = "\nprint('figure rows x columns:', fig.axes[0].get_gridspec().get_geometry())\n"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(hub_cache), "HF_HOME": str(tmp_path),
           "VAN_EDU_QUICK": "1", "MPLBACKEND": "Agg"}
    return subprocess.run([sys.executable, "-c", preamble + section_four() + tail], cwd=ROOT / "notebooks",
                          env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_notebook_08_explains_the_photographs_with_b0_where_its_weights_are_cached(tmp_path):
    """Weights of the authors' layout (random here) in a Hub-layout cache: the section prints three
    named classes per photograph and draws the Grad-CAM (2 rows: image, map; 2 photographs)."""
    torch.manual_seed(0)
    repo, filename = OFFICIAL_CHECKPOINTS["van_b0"]
    snapshot = tmp_path / "hub" / ("models--" + repo.replace("/", "--")) / "snapshots" / ("2" * 40)
    snapshot.mkdir(parents=True)
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("2" * 40)
    torch.save({"state_dict": create_model("van_b0").state_dict(), "epoch": 299}, snapshot / filename)
    done = run_section_four(tmp_path, tmp_path / "hub")
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    names = set(imagenet_classes())
    for shows in ("Chelsea the cat", "a cup of coffee"):
        line = next(line for line in lines if line.startswith(f"{shows}: "))
        guesses = line.split(": ", 1)[1].split(", ")
        assert len(guesses) >= 3 and all(g.endswith("%") for g in guesses), line
        assert any(g.rsplit(" ", 1)[0] in names for g in guesses), line
    assert "Not run" not in done.stdout
    assert "figure rows x columns: (2, 2)" in done.stdout


@pytest.mark.slow
def test_notebook_08_says_why_without_the_weights(tmp_path):
    """An empty cache (offline, as on this machine): the photographs are shown with their credits,
    the B0 cell says why it stops, and the last figure is the photographs' (1 row, 2 columns)."""
    done = run_section_four(tmp_path, tmp_path / "empty-hub")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "cat.jpg: Chelsea the cat; Stefan van der Walt, CC0" in done.stdout
    assert "Not run: the authors' VAN-B0 weights are not here" in done.stdout
    assert "figure rows x columns: (1, 2)" in done.stdout
