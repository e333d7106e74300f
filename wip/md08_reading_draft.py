"""Notebook 08's Reading cells for the new deletion test and the ERF seeds: markdown only (no re-execution)."""
import nbformat
from pathlib import Path

path = Path("notebooks/08_looking_inside.ipynb")
nb = nbformat.read(path, as_version=4)
erf = nb.cells[13]
old = '''The untrained `van_mini` shows what the architecture alone gives; the difference to the trained
one (the last line above) is what learning did to the field.'''
assert old in erf.source
erf.source = erf.source.replace(old, '''The untrained `van_mini` shows what the architecture alone gives, and
an untrained network's field varies with its random initialisation: the last line sets the trained
model's radius beside those of several untrained initialisations. Only one trained van_mini is
bundled (seed 0), so even a radius outside that range would show what training did to this one
model, not what training does to van_mini's field in general; that needs several trained seeds.''')
reading = nb.cells[19]
assert reading.source.startswith("Reading: PLACEHOLDER")
reading.source = reading.source.replace("Reading: PLACEHOLDER", '''Reading: the curves fall as more pixels go, whichever way the pixels are chosen (the table under
the figure). Grad-CAM's deleted pixels lie only partly on the garment (the shares printed first),
which is why the controls are matched: a control on the garment alone would delete more of what any
model needs, and one anywhere in the image would spend part of its deletion on background; either
way the comparison would measure the share, not the map. With both controls matched, the verdict
lines say, per model, whether deleting Grad-CAM's pixels costs more accuracy than deleting the same
numbers of garment and background pixels chosen at random or by the turned map: the difference of
the areas under the curves, its paired 95% interval over the test images, and Holm's correction for
the six comparisons. A map that does not beat both controls is no better a guide to what its model
uses than they are, however convincing its picture; one that costs *less* than a control points at
pixels that model needs less than the control's. All of this is about three trained models (seed
0's weights, the only ones bundled); the random control's seeds tell only how much the control
itself varies (the band, and the range row of the table).''')
nbformat.write(nb, path)
print("08 prose applied")
