"""Build ``data/photos/`` (two CC0 photographs and ``credits.json``, what each shows and whose it is) and ``data/imagenet_classes.txt`` (ImageNet-1K's
1,000 class names, in index order).

Why: notebook 08 explains a network trained on ImageNet, the authors' VAN-B0, on real photographs.
The course must run offline, so two small photographs with no copyright restriction ship with it,
and the class names that turn B0's 1,000 logits into words.

Sources (both on PyPI, so the build needs no other network):

- the photographs: scikit-image's sample data (``skimage/data/`` in its wheel), where both are
  marked "No copyright restrictions. CC0 by the photographer": ``chelsea.png`` (Chelsea the cat,
  by Stefan van der Walt) and ``coffee.png`` (a cup of coffee, by Rachel Michetti, courtesy of
  Pikolo Espresso Bar). They are stored here as JPEG (quality 90, the pixels' size unchanged).
- the class names: the list ``_IMAGENET_CATEGORIES`` in torchvision's ``models/_meta.py`` (BSD-3),
  read as a Python literal (never imported or run): one common name per class, in the order of the
  classifier's outputs, which is the order every ImageNet-1K checkpoint (the authors' included) uses.

The originals' SHA-256 are checked, so a different upstream file is an error, not a silent change.

Usage::

    pip download --no-deps scikit-image torchvision     # two wheels; unzip both into SRC
    python data/build_photos.py --skimage SRC/skimage/data --torchvision SRC/torchvision
"""
from __future__ import annotations

import argparse
import ast
import hashlib
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
PHOTOS = {  # stored name: (scikit-image file, its SHA-256, what it shows, credit)
    "cat.jpg": ("chelsea.png", "596aa1e7cb875eb79f437e310381d26b338a81c2da23439704a73c4651e8c4bb",
                "Chelsea the cat", "Stefan van der Walt, CC0 (scikit-image's sample data)"),
    "coffee.jpg": ("coffee.png", "cc02f8ca188b167c775a7101b5d767d1e71792cf762c33d6fa15a4599b5a8de7",
                   "a cup of coffee", "Rachel Michetti, courtesy of Pikolo Espresso Bar, CC0 "
                                      "(scikit-image's sample data)"),
}
QUALITY = 90


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def build_photos(skimage_data: Path, out: Path) -> None:
    from PIL import Image

    out.mkdir(parents=True, exist_ok=True)
    for name, (source, digest, _, _) in PHOTOS.items():
        path = skimage_data / source
        if not path.is_file():
            sys.exit(f"{path} does not exist: pass --skimage the skimage/data folder of scikit-image's wheel")
        if sha256(path) != digest:
            sys.exit(f"{path} is not the expected file (SHA-256 {sha256(path)}, expected {digest})")
        Image.open(path).convert("RGB").save(out / name, quality=QUALITY, optimize=True)
        print(f"{out / name}: {Image.open(out / name).size[0]}x{Image.open(out / name).size[1]}, "
              f"{(out / name).stat().st_size:,} bytes, SHA-256 {sha256(out / name)}")
    credits = [{"file": name, "shows": shows, "credit": credit, "source": f"scikit-image 0.26.0, skimage/data/{source}"}
               for name, (source, _, shows, credit) in PHOTOS.items()]
    (out / "credits.json").write_text(json.dumps(credits, indent=1, ensure_ascii=False) + "\n")


def build_classes(torchvision_dir: Path, out: Path) -> None:
    meta = torchvision_dir / "models" / "_meta.py"
    if not meta.is_file():
        sys.exit(f"{meta} does not exist: pass --torchvision the torchvision folder of its wheel")
    names = None
    for node in ast.parse(meta.read_text()).body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "_IMAGENET_CATEGORIES":
            names = ast.literal_eval(node.value)
    if names is None or len(names) != 1000 or names[281] != "tabby" or names[967] != "espresso":
        sys.exit(f"{meta} holds no list of the 1,000 ImageNet classes in the expected order")
    out.write_text("\n".join(names) + "\n")
    print(f"{out}: {len(names)} names, SHA-256 {sha256(out)}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--skimage", type=Path, required=True, help="scikit-image's skimage/data folder")
    parser.add_argument("--torchvision", type=Path, required=True, help="torchvision's package folder")
    parser.add_argument("--out", type=Path, default=HERE, help="where photos/ and imagenet_classes.txt go")
    args = parser.parse_args(argv)
    build_photos(args.skimage, args.out / "photos")
    build_classes(args.torchvision, args.out / "imagenet_classes.txt")


if __name__ == "__main__":
    main()
