"""Every measured number in a notebook's prose is one its cells print, or one of the paper's values.

A notebook's Markdown must not state a result its cells do not show: when a re-run changes a
result, a number copied into the prose by hand would silently go stale. So, for every course
notebook ``notebooks/NN_*.ipynb``, every number in a Markdown cell's prose that has a decimal point
or a ``%`` sign ("90.2%", "0.51", "4.9x", "29%") must

- appear, written with the same digits, in an output of the same notebook (stream outputs and the
  ``text/plain``, ``text/markdown`` and ``text/html`` of results and displays): "90.2" is found in
  "acc 90.2%" or "(90.2, 3)" but not in "190.25" or "90.21"; an integer percentage such as "15%"
  must be printed with its ``%`` sign ("15%" or "15 %"), since a bare "15" turns up everywhere; or
- be one of the paper's values that the course records: every number in the module-level
  ``PAPER_*`` constants of the ``van_edu`` package (``complexity.PAPER_TABLE5`` and friends, read
  from the source with ``ast``, so nothing is imported), plus those of ``PAPER_*`` constants that
  the notebook's own code cells define as literals (09's ``PAPER_TABLE3``). A paper value is
  accepted as a number ("75.4", "75.4%", "4.1 M" for 4.1).

The notebooks are read as committed; nothing is executed, so this runs in a second.

What is not prose, and so not checked:

- code: inline code spans (`` `lr=4e-3` ``) and fenced code blocks; they hold literals of code,
  not results;
- LaTeX math (``$...$``, ``$$...$$``): formulas and their constants ("$0.5$" in a definition);
  a result must not hide there, and the notebooks keep them out of it;
- link targets (the ``(...)`` of ``[text](target)``, bare ``http(s)://`` addresses) and the
  insides of HTML tags (``<img width="50%">``); the text of a link and of ``<details>`` (folded
  answers are prose too) is checked;
- identifiers of documents: arXiv ids (``2202.09741``), numbers of sections, equations, tables and
  figures ("Sec. 3.2", "Table 5.1"), and version numbers (anything with two dots, such as
  "3.11.7", or a number right after the name of a package or "version"/"v"/"≥": "torch 2.4",
  "transformers ≥ 4.31"), and a number that ends a hyphenated name ("top-1 %", "ResNet-18");
- the levels of statistical statements, chosen rather than measured: a percentage right before
  "interval", "confidence", "CI", "level" or "significance" ("the 95% interval", "the 5% level").

The sign is not compared ("−0.42" in prose matches "+0.42" printed; the prose's wording carries
the direction), nor are thousands separators normalised (compare as written). Integers without a
``%`` ("60,000 images", "23×23") are not checked: too many of them are sizes and counts fixed by the
code.

A failure lists, per notebook, every offending number with its cell and the sentence around it.
"""
import ast
import functools
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))

# A number as written: digits, thousands commas, decimal parts ("3.11.7" is one token, a version).
NUMBER = re.compile(r"(?<![\w.])(?<![A-Za-z]-)(\d+(?:,\d{3})*(?:\.\d+)*)(\s?%)?")
# Spans that are not prose, replaced by NULs of the same length (so positions stay put).
NOT_PROSE = [
    re.compile(r"```.*?```|~~~.*?~~~", re.S),           # fenced code blocks
    re.compile(r"(`+)(?:(?!\1).)+?\1", re.S),            # inline code spans
    re.compile(r"\$\$.+?\$\$", re.S),                    # display math
    re.compile(r"(?<![\\$])\$(?=\S)[^$\n]+?(?<=\S)\$"),  # inline math
    re.compile(r"\]\([^)\s]*(?:\s+\"[^\"]*\")?\)"),      # link targets: ](...)
    re.compile(r"^\s*\[[^\]]+\]:\s*\S+.*$", re.M),       # reference-style link definitions
    re.compile(r"https?://\S+"),                         # bare addresses
    re.compile(r"<[^>\n]+>"),                            # HTML tags (their text stays)
]
ARXIV = re.compile(r"^\d{4}\.\d{4,5}$")
# Words right before a number that make it an identifier, not a measurement.
REFERENCE_BEFORE = re.compile(
    r"(?i)(?:\b(?:sec|section|sections|eq|eqs|equation|table|tables|fig|figure|figures|appendix|chapter)\.?"
    r"|§|\barxiv:?|\b(?:python|torch|pytorch|numpy|cuda|cudnn|transformers|datasets|timm|nbformat|"
    r"nbval|jupyter|jupyterlab|matplotlib|huggingface_hub|einops|torchinfo|sphinx|version|versions|v)"
    r"\s*(?:[≥≤><]=?|==|>=|<=)?)\s*\(?$")
# Words right after a percentage that make it the level of a test or an interval.
LEVEL_AFTER = re.compile(r"(?i)^\s*(?:(?:welch|confidence|t-test)\S*\s+)?(?:interval|confidence|ci\b|level|significance)")
SENTENCE_END = re.compile(r"(?<=[.!?:;])\s+(?=[A-Z*_(\[`\"'])|\n\s*\n|\n\s*(?:[-*+]|\d+\.)\s+|\n#+\s")


def _source(cell) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else src


def _mask(text: str) -> str:
    """``text`` with every span that is not prose replaced by NULs of the same length."""
    for pattern in NOT_PROSE:
        text = pattern.sub(lambda m: "\0" * len(m.group(0)), text)
    return text


def _sentence(text: str, start: int, end: int) -> str:
    """The sentence (or list item) of ``text`` around ``text[start:end]``, on one line."""
    left, right = 0, len(text)
    for m in SENTENCE_END.finditer(text):
        if m.end() <= start:
            left = m.end()
        elif m.start() >= end:
            right = m.start()
            break
    return " ".join(text[left:right].split())


def prose_numbers(markdown: str):
    """The checked numbers of one Markdown cell: ``(digits, has_percent, sentence)`` per number.

    ``digits`` is the number as written, without sign ("90.2", "1,024.5"); only numbers with a
    decimal point or a ``%`` sign are returned, and none from the spans and identifiers the module
    docstring excludes.
    """
    masked = _mask(markdown)
    found = []
    for m in NUMBER.finditer(masked):
        digits, percent = m.group(1), bool(m.group(2))
        if digits.count(".") > 1 or ARXIV.match(digits):
            continue                                     # a version ("3.11.7") or an arXiv id
        if "." not in digits and not percent:
            continue                                     # integers are not checked
        if REFERENCE_BEFORE.search(masked[max(0, m.start() - 30):m.start()].replace("\0", " ")):
            continue                                     # "Table 5.1", "torch 2.4"
        if percent and LEVEL_AFTER.match(masked[m.end():m.end() + 40].replace("\0", " ")):
            continue                                     # "the 95% interval", "the 5% level"
        found.append((digits, percent, _sentence(markdown, m.start(), m.end())))
    return found


def output_text(nb) -> str:
    """Everything the notebook's code cells printed or displayed as text, one string."""
    parts = []
    for cell in nb["cells"]:
        for out in cell.get("outputs", []) if cell["cell_type"] == "code" else []:
            if out.get("output_type") == "stream":
                parts.append(_source({"source": out.get("text", "")}))
            for kind in ("text/plain", "text/markdown", "text/html"):
                if kind in out.get("data", {}):
                    parts.append(_source({"source": out["data"][kind]}))
    return "\n".join(parts)


def is_printed(digits: str, percent: bool, outputs: str) -> bool:
    """Whether ``digits`` appears in ``outputs`` as a whole number with the same digits (with its
    ``%`` sign when it is an integer percentage)."""
    suffix = r"\s?%" if percent and "." not in digits else r"(?![\d]|\.\d)"
    return re.search(r"(?<![\d.])" + re.escape(digits) + suffix, outputs) is not None


def _numbers_in(node) -> set[float]:
    """Every int and float in a literal structure (keys, values, tuples, nested)."""
    if isinstance(node, bool):
        return set()
    if isinstance(node, (int, float)):
        return {float(node)}
    if isinstance(node, dict):
        return _numbers_in(list(node.keys())) | _numbers_in(list(node.values()))
    if isinstance(node, (list, tuple, set, frozenset)):
        return set().union(*(_numbers_in(v) for v in node)) if node else set()
    return set()


def paper_constants(source: str) -> set[float]:
    """The numbers of the top-level ``PAPER_* = <literal>`` assignments of some Python source."""
    lines = [("pass" if line.lstrip().startswith(("%", "!")) else line) for line in source.splitlines()]
    try:
        tree = ast.parse("\n".join(lines))
    except SyntaxError:
        return set()
    values = set()
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
        if node_value := getattr(node, "value", None):
            if any(isinstance(t, ast.Name) and t.id.startswith("PAPER_") for t in targets):
                try:
                    values |= _numbers_in(ast.literal_eval(node_value))
                except ValueError:
                    pass                                 # not a literal: nothing to read without running it
    return values


@functools.cache
def package_paper_values() -> frozenset[float]:
    """The paper's values that ``van_edu`` records: the numbers of its ``PAPER_*`` constants."""
    values = set()
    for path in sorted((ROOT / "van_edu").rglob("*.py")):
        values |= paper_constants(path.read_text(encoding="utf-8"))
    return frozenset(values)


def is_paper_value(digits: str, paper: set[float]) -> bool:
    value = float(digits.replace(",", ""))
    return any(abs(value - v) < 1e-9 for v in paper)


def offenders(nb, paper) -> list[str]:
    """One line per number of the notebook's prose that neither an output nor the paper backs."""
    paper = set(paper) | set().union(*(paper_constants(_source(c)) for c in nb["cells"] if c["cell_type"] == "code"))
    outputs = output_text(nb)
    lines = []
    for index, cell in enumerate(nb["cells"]):
        if cell["cell_type"] != "markdown":
            continue
        for digits, percent, sentence in prose_numbers(_source(cell)):
            if not (is_printed(digits, percent, outputs) or is_paper_value(digits, paper)):
                lines.append(f"  cell {index}: {digits}{'%' if percent else ''}  in: {sentence}")
    return lines


# --- the checker itself, on a small notebook made here ------------------------------------------

def _notebook(markdown: list[str], printed: str, code: str = "print()") -> dict:
    cells = [{"cell_type": "markdown", "source": m} for m in markdown]
    cells.append({"cell_type": "code", "source": code,
                  "outputs": [{"output_type": "stream", "name": "stdout", "text": printed}]})
    return {"cells": cells}


def test_a_printed_number_passes_and_a_stale_one_is_reported_with_its_sentence():
    nb = _notebook(["Accuracy is 90.2% here. It was 91.5% before.\n\nNext paragraph."], "accuracy: 90.2%\n")
    assert offenders(nb, set()) == ["  cell 0: 91.5%  in: It was 91.5% before."]


def test_same_digits_only():
    outputs = "ratio 190.25, slope 2.581, 0.51 and +29%, 4.9x, 15 px"
    assert is_printed("0.51", False, outputs) and is_printed("4.9", False, outputs)
    assert is_printed("29", True, outputs)
    assert not is_printed("90.2", False, outputs)      # inside 190.25
    assert not is_printed("2.58", False, outputs)      # 2.581 is printed, not 2.58
    assert not is_printed("15", True, outputs)         # "15 px" does not back "15%"


def test_what_is_not_prose_is_not_checked():
    text = ("Code `lr=0.004` and $\\alpha = 0.5$ and $$y = 0.25 x$$, a [link 3.5](https://x.org/1.5) "
            "and https://a.b/2.5; arXiv 2202.09741, Sec. 3.2, Table 5.1, torch 2.4, python 3.11.7, "
            "<img width=\"50%\">, 60,000 images, 23×23, top-1 % and ResNet-18.\n```\nx = 0.75\n```\n")
    assert [d for d, _, _ in prose_numbers(text)] == ["3.5"]   # the link's text is prose


def test_folded_answers_are_prose_and_integer_percentages_count():
    text = ("<details><summary>Answer</summary>About 4.9x faster, within 15% of it; the 95% interval "
            "and the 5% level are not results.</details>")
    assert [(d, p) for d, p, _ in prose_numbers(text)] == [("4.9", False), ("15", True)]


def test_paper_values_are_read_from_the_package_and_from_the_notebook():
    paper = package_paper_values()
    assert {75.4, 4.1, 0.9, 86.9, 74.8, 4.11, 2140.0} <= paper          # Tables 5 and 6, throughput
    nb = _notebook(["The paper: 75.4% (Table 5); 74.9% without DW-Conv; 73.2% nowhere."], "",
                   code="PAPER_TABLE3 = {'lka': 75.4, 'no_dw_conv': 74.9}\nprint()")
    assert [line.split("  in:")[0] for line in offenders(nb, paper)] == ["  cell 0: 73.2%"]


# --- the course ---------------------------------------------------------------------------------

def test_the_course_notebooks_are_found():
    assert len(NOTEBOOKS) >= 10


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_prose_numbers_are_printed_or_the_papers(path):
    nb = json.loads(path.read_text(encoding="utf-8"))
    bad = offenders(nb, package_paper_values())
    assert not bad, (f"{path.name}: {len(bad)} number(s) in the prose that no output prints and the "
                     f"paper's recorded values do not hold:\n" + "\n".join(bad))
