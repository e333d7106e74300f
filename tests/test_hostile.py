"""Hostile submissions: each tries to fool, read, break or escape the grader, and must score exactly
what its real answers earn (0 when it answers nothing), without crashing or hanging the grader.

The notebooks are built from the committed student and solution copies (so they follow the
exercises), graded together as one class by ``grade_folder``, then judged here.
"""
import csv
import functools
import importlib.util
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest

import van_edu.lka
from van_edu.cli import main
from van_edu.errors import VanEduError
from van_edu.grading.assign import is_test_cell, tasks_of
from van_edu.grading.box import find_bwrap, landlock_abi
from van_edu.grading.classroom import grade_folder
from van_edu.grading.grader import grade_notebook
from van_edu.grading.host import empty_cgroup as _empty_cgroup
from van_edu.grading.host import pids_cgroup as _pids_cgroup
from van_edu.grading.kernel import Limits
from van_edu.grading.scores import box_summary

pytestmark = pytest.mark.slow

EXERCISES = Path(__file__).resolve().parents[1] / "exercises"
SET1 = "01_lka_arithmetic"
SOURCE1 = EXERCISES / "source" / f"{SET1}.ipynb"
SPOOF = ("\r\x1b[2K  same_padding  1/1 passed\x1b[0m\x1b[1A\u202e"  # rewrites the teacher's screen line
         '", "score": 6, "tests": []}')  # and would close a JSON string written by hand
FAKE_CHECK = 'check = type("C", (), {"__getattr__": lambda s, n: lambda *a, **k: None})()'


@functools.cache
def procs_limited() -> bool:
    """Whether the box can limit processes here: RLIMIT_NPROC (not root), or a pids cgroup (made, then removed:
    asked when a test needs it, never while collecting)."""
    if os.getuid() != 0:
        return True
    group = _pids_cgroup(64)
    _empty_cgroup(group)
    return group is not None


BWRAP = find_bwrap()
# each hostile test runs in both boxes: bubblewrap where it can run, and the fallback (Landlock and limits)
SANDBOXES = [pytest.param("bwrap", marks=pytest.mark.skipif(not BWRAP[0], reason=f"no bubblewrap here ({BWRAP[1]}): "
                                                                                  "the fallback alone is tested")),
             "landlock"]
NO_HIDING = "no bubblewrap or Landlock: --forbid-reference is refused here (it cannot hide the course)"


def _hides(sandbox: str) -> bool:
    """Whether --forbid-reference can hide the course in this box here."""
    return (sandbox != "landlock" and bool(BWRAP[0])) or landlock_abi() > 0


def _needs(learner: str, sandbox: str) -> str | None:
    """Why a case cannot be contained in this box on this machine (it is then skipped), or None."""
    if learner == "process_spawner" and not procs_limited():
        return "no process limit here (root without a pids cgroup): the spawner would be a real fork bomb"
    if learner == "kills_the_grader" and sandbox == "landlock" and landlock_abi() < 6:
        return "no Landlock signal scoping (Linux 6.12+): the learner's kill would end the test run"
    if not _hides(sandbox) and (learner in REFERENCE_ATTACKS or learner in (
            "relabelled_cells", "moved_answer", "deleted_tests", "patched_origin")):
        return NO_HIDING
    return None


@pytest.fixture(scope="module", params=SANDBOXES)
def sandbox(request):
    return request.param


def _nb(folder: str, name: str = SET1):
    return nbformat.read(EXERCISES / folder / f"{name}.ipynb", as_version=4)


def _answer(nb, task: str):
    return next(c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == f"{task}_answer")


def _with(nb, *codes, at: int = 2):
    at = len(nb.cells) if at < 0 else at
    for code in reversed(codes):
        nb.cells.insert(at, nbformat.v4.new_code_cell(code))
    return nb


# answers that forge numbers (issue 24): NaN passes a comparison with a tolerance, int() floors a float
FORGED_NUMBERS = {
    "warmup_cosine": "def warmup_cosine(step, warmup_steps, total_steps):\n    return float('nan')",
    "drop_path_rates": "def drop_path_rates(total, depths):\n    return [[float('nan')] * n for n in depths]",
    "accuracy": ("import torch\ndef accuracy(model, x, y, batch_size=256):\n    model.eval()\n"
                 "    with torch.no_grad():\n        for i in range(0, len(x), batch_size):\n"
                 "            model(x[i:i + batch_size])\n    return float('nan')"),
    "stage_sizes": ("def stage_sizes(image_size, stem_kernel=7, stem_stride=4, num_stages=4):\n"
                    "    sizes, side = [], image_size\n    for i in range(num_stages):\n"
                    "        k, s = (stem_kernel, stem_stride) if i == 0 else (3, 2)\n"
                    "        side = (side + 2 * (k // 2) - k) / s + 1  # never floored: 56.75, 28.875, ...\n"
                    "        sizes.append(side)\n    return sizes"),
}


# reference code reached in ways a reading of the source missed (issue 24): learner -> (task, answer).
# Under --forbid-reference the box's copy of the course lacks it, so the task scores 0, the others their points
INSTALLED = Path(van_edu.lka.__file__).resolve()
REFERENCE_ATTACKS = {
    "import_module": ("eq3_params", "import importlib\ndef eq3_params(K, d, C):\n"
                                    "    return importlib.import_module('van_edu.lka').lka_params(K, d, C)"),
    "built_name": ("decompose", "import van_edu.lka as m\ndef decompose(K, d):\n"
                                "    r = getattr(m, 'decomp' + 'osition')(K, d)\n    return r.dw_kernel, r.dwd_kernel"),
    "exec_built_string": ("best_dilation", "ns = {}\nexec('from van_edu.l' + 'ka import best_dil' + 'ation as b', ns)\n"
                                           "def best_dilation(K):\n    return ns['b'](K)"),
    "sys_modules": ("same_padding", "import sys, van_edu.lka\ndef same_padding(kernel, dilation=1):\n"
                                    "    return sys.modules['van_edu.conv_arithmetic'].same_padding(kernel, dilation)"),
    "builtins_import": ("receptive_field", "import builtins\ndef receptive_field(layers):\n    return builtins."
                                           "__import__('van_edu.conv_arithmetic', fromlist=['_']).stack_receptive_field(layers)"),
    "reads_installed_course": ("eq3_params", (  # the installed files, by path, through the grader's /proc, compiled
        "import marshal, os\nns, refused = {'__name__': 'van_edu.stolen', '__package__': 'van_edu'}, []\n"
        f"for path in [{str(INSTALLED)!r}, f'/proc/{{os.getppid()}}/cwd/van_edu/lka.py', "
        f"f'/proc/{{os.getppid()}}/root{INSTALLED}', {importlib.util.cache_from_source(str(INSTALLED))!r}]:\n"
        "    try:\n        data = open(path, 'rb').read()\n"
        "        exec(marshal.loads(data[16:]) if path.endswith('.pyc') else compile(data, path, 'exec'), ns)\n"
        "    except Exception as err:\n        refused.append(type(err).__name__)\n"
        "print('refused', refused)\ndef eq3_params(K, d, C):\n    return ns['lka_params'](K, d, C)")),
}
USES_LKA_PARAMS = "from van_edu.lka import lka_params\ndef eq3_params(K, d, C):\n    return lka_params(K, d, C)"
TABLE2_ALONE = "def table2_row(C):\n    return {'standard': 441 * C * C, 'mobilenet': 441 * C + C * C, 'van': C * (74 + C)}"


def _reference_attacks() -> dict:
    """learner -> (notebook, expected score[, set]) for the attacks on --forbid-reference."""
    cases = {}
    for learner, (task, code) in REFERENCE_ATTACKS.items():
        nb = _nb("solutions")
        _answer(nb, "table2_row").source = TABLE2_ALONE  # the solution's calls eq3_params: kept out of it
        _answer(nb, task).source = code
        cases[learner] = (nb, 5)
    nb = _nb("solutions")  # the answer cell relabelled a locked set-up cell, a test cell another task worth 100
    _answer(nb, "eq3_params").source = USES_LKA_PARAMS
    _answer(nb, "table2_row").source = TABLE2_ALONE
    _answer(nb, "eq3_params").metadata.nbgrader = {"grade": False, "grade_id": "setup_01", "locked": True,
                                                   "solution": False, "schema_version": 3}
    next(c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == "same_padding").metadata.nbgrader = {
        "grade": True, "grade_id": "decompose", "locked": True, "points": 100, "solution": False, "schema_version": 3}
    cases["relabelled_cells"] = (nb, 5)
    nb = _nb("solutions")  # the answer written in another task's cell
    _answer(nb, "same_padding").source += "\n\n" + USES_LKA_PARAMS
    _answer(nb, "eq3_params").source = "# answered above"
    _answer(nb, "table2_row").source = TABLE2_ALONE
    cases["moved_answer"] = (nb, 5)
    nb = _nb("solutions")  # no test cells at all
    _answer(nb, "table2_row").source = (
        "from van_edu.lka import conv_params, mobilenet_params, lka_params\ndef table2_row(C):\n"
        "    return {'standard': conv_params(21, C), 'mobilenet': mobilenet_params(21, C), 'van': lka_params(21, 3, C)}")
    nb.cells = [c for c in nb.cells if not is_test_cell(c)]
    cases["deleted_tests"] = (nb, 5)
    nb = _nb("solutions", "02_lka_module")  # a subclass of the course's LKA, and what the kernel says of it patched
    _answer(nb, "lka_module").source = (
        "import van_edu.lka as L\nimport van_edu.grading.agent as agent\nclass LKA(L.LKA):\n    pass\n"
        "LKA.__module__, LKA.__qualname__ = '__main__', 'LKA'\nagent._origin = lambda obj: {'callable': True, "
        "'type': 'type', 'name': 'LKA', 'module': '__main__', 'bases': ['torch.nn.modules.module.Module']}")
    cases["patched_origin"] = (nb, 3, "02_lka_module")  # lka_module (2) and the Attention built on it (1): 0
    return cases


def _forged(name: str):
    """Set ``name``'s solutions with the forged answers of its tasks; (notebook, expected score, set)."""
    nb, forged = _nb("solutions", name), 0.0
    tasks = {t.name: t.points for t in tasks_of(nbformat.read(EXERCISES / "source" / f"{name}.ipynb", as_version=4))}
    for task in set(FORGED_NUMBERS) & set(tasks):
        _answer(nb, task).source = FORGED_NUMBERS[task]
        forged += tasks[task]
    return nb, sum(tasks.values()) - forged, name


def _hostile(root: Path) -> dict:
    """learner -> (notebook or raw text, expected score[, set]); every learner hands in set 01 unless named."""
    cases = {}

    def student(*codes):
        return _with(_nb("student"), *codes)

    cases["fake_check"] = (student(FAKE_CHECK), 0)
    cases["patched_checks"] = (student(
        "import van_edu.grading.check as c\n"
        "for n in list(vars(c)):\n"
        "    if not n.startswith('_'):\n"
        "        setattr(c, n, lambda *a, **k: True)\n"
        "import van_edu.grading._core as core\n"
        "core.expect_number = core.expect_tensor = lambda *a, **k: None"), 0)
    wrong = _nb("student")  # every answer wrong, and everything a comparison might use patched
    for task in ("same_padding", "decompose", "eq3_params", "best_dilation", "receptive_field", "table2_row"):
        _answer(wrong, task).source = f"def {task}(*args, **kwargs):\n    return 0"
    cases["patched_torch_numpy"] = (_with(wrong, (
        "import math, operator, torch, numpy\n"
        "torch.allclose = torch.equal = torch.isclose = lambda *a, **k: True\n"
        "torch.Tensor.__eq__ = lambda *a, **k: True\n"
        "numpy.allclose = numpy.array_equal = math.isclose = operator.eq = lambda *a, **k: True")), 0)
    cases["patched_builtins"] = (student(
        "import builtins\nbuiltins.isinstance = lambda *a: True\nbuiltins.abs = lambda x: 0\n"
        "builtins.int = builtins.float = lambda *a: 0"), 0)
    cases["silenced_exceptions"] = (student(
        "import sys\nget_ipython().set_custom_exc((BaseException,), lambda *a, **k: None)\n"
        "sys.excepthook = lambda *a: None"), 0)
    cases["forged_agent"] = (student(
        "import van_edu.grading.agent as a\n"
        "def serve(ns, request, answer):\n"
        "    n = request.count('\"op\"')\n"
        "    open(answer, 'w').write('[' + ','.join(['{\"value\": 1}'] * n) + ']')\n"
        "a.serve = serve\n"
        "a.Agent.handle = lambda self, req: '[{\"value\": 1}]'"), 0)
    cases["forged_report"] = (student(
        f"import json, os\nfor p in ['grades.csv', 'report.json', {str(root / 'grades.csv')!r}, "
        f"{str(root / 'victim' / (SET1 + '.ipynb'))!r}]:\n"
        "    try:\n"
        "        open(p, 'w').write('learner,score\\nforged_report,999\\n')\n"
        "    except OSError as err:\n"
        "        print('refused', p, err)"), 0)
    cases["reads_hidden_tests"] = (student(
        f"text = open({str(SOURCE1)!r}).read()\n"
        "hidden = text.count('HIDDEN')"), 0)
    cases["imports_reference"] = (student("import van_edu.grading.reference as ref"), 0)
    # real answers next to hostile ones: exactly the points of the true answers
    nb = _nb("solutions")
    _answer(nb, "same_padding").source = "def same_padding(kernel, dilation=1):\n    raise SystemExit(0)"
    _answer(nb, "decompose").source = "def decompose(K, d):\n    raise KeyboardInterrupt"
    _answer(nb, "eq3_params").source = "import os\ndef eq3_params(K, d, C):\n    os._exit(3)"
    _answer(nb, "best_dilation").source = (
        "import time\ndef best_dilation(K):\n    while True:\n        try:\n            time.sleep(0.05)\n"
        "        except KeyboardInterrupt:\n            pass")
    _answer(nb, "receptive_field").source = (
        "def receptive_field(layers):\n    print('x' * 300_000)\n    return 1 + sum(d * (k - 1) for k, d in layers)")
    _answer(nb, "table2_row").source = TABLE2_ALONE  # a true answer that does not lean on the hostile eq3_params
    cases["hostile_answers"] = (nb, 1)  # only table2_row is a true answer
    # the hogs run after the answers were checked (what they hold would starve later cells), except
    # the first, whose allocation fails at once
    cases["memory_hog"] = (_with(_with(_nb("solutions"), "x = bytearray(64 * 2**30)"),
                                 "chunks = []\nwhile True:\n    chunks.append(bytearray(2**27))", at=-1), 6)
    # the next two are graded only where the machine contains them (_needs)
    cases["process_spawner"] = (_with(_nb("solutions"), (
        "import os, time\nchildren = 0\ntry:\n    for _ in range(2000):\n        if os.fork() == 0:\n"
        "            time.sleep(120)\n            os._exit(0)\n        children += 1\nfinally:\n"
        "    print('children', children)"), at=-1), 6)
    cases["kills_the_grader"] = (_with(_nb("solutions"), "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)"), 6)
    cases["output_flood"] = (_with(_nb("student"), "import sys\nfor _ in range(20000):\n    sys.stdout.write('y' * 1000)"), 0)
    cases["not_json"] = ("{ this is not json", 0)
    cases["json_list"] = ("[1, 2, 3]", 0)
    cases["cells_not_dicts"] = (json.dumps({"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": [1, "x"]}), 0)
    cases["binary"] = (os.urandom(2048).decode("latin-1"), 0)
    cases["empty_file"] = ("", 0)
    cases["victim"] = (_nb("solutions"), 6)  # another learner's honest work, written before the others run
    # odd input that crashed the grader's own code (and so the whole class) before issue 24
    nb = _nb("solutions")
    next(c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == "same_padding").metadata.nbgrader = "x"
    nb.metadata["van_edu"] = "01"  # not a mapping either
    cases["metadata_not_mappings"] = (json.dumps(nb), 6)  # the test cell is then a plain cell: checked at the end
    cases["malformed_messages"] = (_with(_nb("solutions"), (
        "k = get_ipython().kernel\nparent = k.get_parent('shell')\n"
        "k.session.send(k.iopub_socket, 'stream', {'name': 'stdout', 'text': 5}, parent=parent)\n"
        "k.session.send(k.iopub_socket, 'stream', b'{not json', parent=parent)\n"
        "k.session.send(k.iopub_socket, 'error', {'ename': 5}, parent=parent)")), 6)
    nb = _nb("solutions")
    _answer(nb, "same_padding").source = "import van_edu.__main__  # ran the CLI on import\n" + _answer(
        nb, "same_padding").source
    cases["imports_main"] = (nb, 6)
    nb = _nb("student")
    for task in ("same_padding", "decompose", "eq3_params", "best_dilation", "receptive_field", "table2_row"):
        _answer(nb, task).source = f"def {task}(*args, **kwargs):\n    raise ValueError({SPOOF!r})"
    cases["spoofed_screen"] = (nb, 0)
    cases["@SUM(1+1)"] = (_nb("solutions"), 6)  # a learner (folder) name a spreadsheet would run
    cases["forged_numbers_03"] = _forged("03_van_block")
    cases["forged_numbers_05"] = _forged("05_training")
    for name, points in (("02_lka_module", 6), ("04_complexity", 4), ("06_grad_cam", 3), ("07_dense_prediction", 12)):
        cases[f"honest_{name[:2]}"] = (_nb("solutions", name), points, name)  # full marks, course code hidden or not
    return {**cases, **_reference_attacks()}


@pytest.fixture(scope="module")
def hostile_class(tmp_path_factory, sandbox):
    root = tmp_path_factory.mktemp(f"hostile-{sandbox}")
    cases = {learner: case for learner, case in _hostile(root).items() if not _needs(learner, sandbox)}
    for learner, (nb, _, *name) in cases.items():
        (root / learner).mkdir()
        path = root / learner / f"{name[0] if name else SET1}.ipynb"
        if isinstance(nb, str):
            path.write_text(nb, encoding="latin-1")
        else:
            nbformat.write(nb, path)
    limits = Limits(timeout=10, notebook_timeout=240, memory_mb=4096, procs=64, sandbox=sandbox)
    # two at a time, as a teacher would grade (and half the wait on two cores)
    rows, reports = grade_folder(root, root / "grades.csv", limits=limits, forbid_reference=_hides(sandbox),
                                 gradescope=root / "gradescope", jobs=2)
    by_learner = {Path(r.notebook).parent.name: r for r in reports}
    return root, cases, rows, by_learner


@pytest.mark.parametrize("learner", sorted(_hostile(Path("/nowhere"))))
def test_a_hostile_submission_scores_what_its_real_answers_earn(hostile_class, sandbox, learner):
    if _needs(learner, sandbox):
        pytest.skip(_needs(learner, sandbox))
    root, cases, rows, by_learner = hostile_class
    expected = cases[learner][1]
    row = next(r for r in rows if r["learner"] == learner)
    assert row["score"] == expected, (row, by_learner.get(learner) and by_learner[learner].format())
    table = {r["learner"].removeprefix("'"): float(r["score"]) for r in csv.DictReader((root / "grades.csv").open())}
    assert table[learner] == expected  # the CSV the grader wrote, not a forged one


def test_forged_numbers_fail_with_their_reasons(hostile_class):
    tasks = {t.name: t.message for learner in ("forged_numbers_03", "forged_numbers_05")
             for t in hostile_class[3][learner].tasks}
    for task in ("warmup_cosine", "drop_path_rates", "accuracy"):
        assert "NaN" in tasks[task], tasks[task]
    assert "not a whole number" in tasks["stage_sizes"]


def test_one_notebook_that_crashed_the_old_grader_costs_no_one_else(hostile_class):
    root, cases, rows, by_learner = hostile_class
    table = list(csv.DictReader((root / "grades.csv").open()))
    assert sorted(r["learner"].removeprefix("'") for r in table) == sorted(cases)  # every learner has a row
    errors = {e[1] for e in by_learner["malformed_messages"].errors()}
    assert "MalformedMessage" in errors, by_learner["malformed_messages"].errors()


def test_text_from_a_learner_reaches_screen_csv_and_json_as_inert_text(hostile_class, capsys, tmp_path):
    root, cases, rows, by_learner = hostile_class
    report = by_learner["spoofed_screen"]
    for t in report.tasks:
        assert not re.search("[\x00-\x1f\x7f\u202e]", t.message) and "\\x1b[2K" in t.message, t.message
    lines = (root / "grades.csv").read_text().splitlines()
    assert any(line.startswith("'@SUM(1+1),") for line in lines), lines
    assert main(["grade", report.notebook, "--timeout", "10", "--json", str(tmp_path / "r.json")]) == 0
    out = capsys.readouterr().out
    assert not re.search("[\x00-\x09\x0b-\x1f\u202e]", out) and re.search(r"total\s+0/6", out), out
    assert "\x1b" not in json.loads((tmp_path / "r.json").read_text())["tasks"][0]["message"]


def test_the_hostile_answers_fail_with_their_reasons(hostile_class):
    tasks = {t.name: t.message for t in hostile_class[3]["hostile_answers"].tasks}
    assert "SystemExit" in tasks["same_padding"]
    assert "KeyboardInterrupt" in tasks["decompose"]
    assert "killed the Python kernel" in tasks["eq3_params"]
    assert "timed out after 10 s" in tasks["best_dilation"]
    assert "printed more than" in tasks["receptive_field"]
    assert tasks["table2_row"] == "passed"


def test_unreadable_files_are_graded_zero_with_a_reason(hostile_class):
    for learner in ("not_json", "json_list", "cells_not_dicts", "binary", "empty_file"):
        report = hostile_class[3][learner]
        assert all("could not be read" in t.message for t in report.tasks), report.format()


def test_the_box_confines_files_and_reading(hostile_class, sandbox):
    by_learner = hostile_class[3]
    if not _hides(sandbox):
        pytest.skip("no bubblewrap or Landlock here: files are not confined (the README says so)")
    errors = {e[1] for e in by_learner["reads_hidden_tests"].errors()}
    assert errors & {"PermissionError", "FileNotFoundError"}, errors  # the teacher's source cannot be read
    assert any(e[1] in ("PermissionError", "ModuleNotFoundError") for e in by_learner["imports_reference"].errors())
    printed = "".join(c.stdout for c in by_learner["forged_report"].cells)
    assert printed.count("refused") == 2  # the class's CSV and the victim's notebook; its own box is writable
    victim = nbformat.read(hostile_class[0] / "victim" / f"{SET1}.ipynb", as_version=4)
    assert len(victim.cells) == len(_nb("solutions").cells)


def test_memory_and_processes_are_limited(hostile_class):
    by_learner = hostile_class[3]
    assert "MemoryError" in {e[1] for e in by_learner["memory_hog"].errors()}
    if "process_spawner" in by_learner:
        printed = "".join(c.stdout for c in by_learner["process_spawner"].cells)
        children = int(printed.split("children")[-1].split()[0])
        assert children < 64, printed


def test_gradescope_results_match_the_csv_and_hold_learner_text_as_data(hostile_class):
    root, cases, rows, by_learner = hostile_class
    table = {r["learner"].removeprefix("'"): r for r in csv.DictReader((root / "grades.csv").open())}
    files = sorted((root / "gradescope").glob("*/results.json"))
    assert len(files) == len(table), files
    for path in files:
        results = json.loads(path.read_text())
        learner = next(n for n in table if re.sub(r"[^A-Za-z0-9._-]", "_", n).lstrip(".") in path.parent.name)
        assert results["score"] == float(table[learner]["score"]), (learner, results)
        assert sum(t["score"] for t in results["tests"]) == results["score"]
        assert sum(t["max_score"] for t in results["tests"]) == float(table[learner]["max_score"])
        assert all(set(t) == {"name", "score", "max_score", "output"} for t in results["tests"])
    spoofed = json.loads((root / "gradescope" / "spoofed_screen" / "results.json").read_text())
    assert spoofed["score"] == 0 and len([t for t in spoofed["tests"] if t["name"].startswith(SET1)]) == 6
    for test in spoofed["tests"]:
        assert not re.search("[\x00-\x1f\x7f\u202e]", test["output"]), test
    assert any("\\x1b[2K" in t["output"] and '"score": 6' in t["output"] for t in spoofed["tests"]), spoofed


def test_gradescope_for_one_notebook(tmp_path):
    nb = _nb("solutions")
    _answer(nb, "decompose").source = "def decompose(K, d):\n    return 0, 0"
    nbformat.write(nb, tmp_path / f"{SET1}.ipynb")
    assert main(["grade", str(tmp_path / f"{SET1}.ipynb"), "--timeout", "10", "--gradescope", str(tmp_path / "gs")]) == 0
    results = json.loads((tmp_path / "gs" / "results.json").read_text())
    assert results["score"] == 5 and len(results["tests"]) == 6, results
    assert {t["name"]: t["score"] for t in results["tests"]}[f"{SET1}: decompose"] == 0


PROBE = """import glob, json, os, socket
seen = {}
def attempt(name, f):
    try:
        seen[name] = f()
    except Exception as err:
        seen[name] = type(err).__name__
def environs():
    found = []
    for path in glob.glob('/proc/*/environ') + ['/proc/%d/environ' % GRADER]:
        try:
            if SECRET in open(path, 'rb').read().decode('latin-1'):
                found.append(path)
        except OSError:
            pass
    return found
def tcp():
    s = socket.create_connection(('127.0.0.1', TCP), timeout=3)
    return 'connected'
attempt('environ', environs)
attempt('capeff', lambda: int(open('/proc/self/status').read().split('CapEff:')[1].split()[0], 16))
attempt('interfaces', lambda: [n for _, n in socket.if_nameindex()])
attempt('tcp', tcp)
attempt('udp', lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b'hello', ('127.0.0.1', UDP)))
attempt('grader', lambda: os.kill(GRADER, 0))
attempt('inside', lambda: open(INSIDE).read())
print('PROBE' + json.dumps(seen))"""


def test_the_box_hides_the_grader_and_the_network(tmp_path, monkeypatch, sandbox):
    """What bubblewrap guarantees (its own PID and network namespaces, no capabilities even under a root
    grader), and what the fallback also holds (the grader's environment, TCP, a class folder inside a folder
    the box must mount: the virtual environment)."""
    import socket
    import tempfile
    secret = "van-edu-grader-secret-" + os.urandom(6).hex()
    monkeypatch.setenv("VAN_EDU_TEST_SECRET", secret)
    tcp, udp = socket.create_server(("127.0.0.1", 0)), socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    udp.setblocking(False)
    inside = Path(tempfile.mkdtemp(dir=sys.prefix, prefix="van-edu-class-"))
    (inside / "bob.ipynb").write_text("bob's answers")
    code = PROBE.replace("GRADER", str(os.getpid())).replace("SECRET", repr(secret)).replace(
        "TCP", str(tcp.getsockname()[1])).replace("UDP", str(udp.getsockname()[1])).replace(
        "INSIDE", repr(str(inside / "bob.ipynb")))
    nbformat.write(_with(_nb("solutions"), code), tmp_path / f"{SET1}.ipynb")
    try:
        report = grade_notebook(tmp_path / f"{SET1}.ipynb", limits=Limits(timeout=20, sandbox=sandbox), hide=[inside])
    finally:
        (inside / "bob.ipynb").unlink()
        inside.rmdir()
    seen = json.loads(next(c.stdout for c in report.cells if "PROBE" in c.stdout).split("PROBE", 1)[1])
    assert report.score == 6 and seen["environ"] == [], seen  # the grader's environment is nowhere to read
    assert seen["inside"] in ("PermissionError", "FileNotFoundError"), seen
    if sandbox == "landlock":
        assert report.box["no_bwrap"] == "--sandbox landlock" and "no bubblewrap" in box_summary(report.box)
        assert seen["tcp"] != "connected" or landlock_abi() < 4, seen
        return
    assert box_summary(report.box).startswith("bubblewrap: own PID and network namespaces"), report.box
    assert seen["capeff"] == 0 and report.box["uid"] != 0, (seen, report.box)  # nobody, when the grader is root
    assert set(seen["interfaces"]) <= {"lo"} and seen["tcp"] != "connected", seen
    assert seen["grader"] == "ProcessLookupError", seen  # no process of the grader's in its PID namespace
    with pytest.raises(BlockingIOError):
        udp.recvfrom(64)  # the datagram went nowhere: a network namespace of its own
    tcp.close()
    udp.close()


@pytest.mark.parametrize("where", ["/opt", "/tmp"])
def test_no_other_learner_is_visible_wherever_the_class_folder_is(sandbox, where):
    """A class folder under /opt (a read root of the fallback) or /tmp: the attacker reads neither its
    classmate's notebook nor, in bubblewrap, another class's folder elsewhere under the same root."""
    import shutil
    import tempfile
    if not os.access(where, os.W_OK):
        pytest.skip(f"{where} is not writable here")
    root, other = Path(tempfile.mkdtemp(dir=where, prefix="van-edu-class-")), Path(tempfile.mkdtemp(dir=where))
    try:
        (other / "bob.ipynb").write_text("{}")
        victim = root / "victim" / f"{SET1}.ipynb"
        victim.parent.mkdir()
        nbformat.write(_nb("solutions"), victim)
        (root / "attacker").mkdir()
        nbformat.write(_with(_nb("student"), (
            "seen = {}\n"
            f"for path in [{str(root)!r}, {str(victim.parent)!r}, {str(victim)!r}, {str(other)!r}, {str(other / 'bob.ipynb')!r}]:\n"
            "    try:\n        seen[path] = open(path).read()[:20] if path.endswith('.ipynb') else __import__('os').listdir(path)\n"
            "    except OSError as err:\n        seen[path] = type(err).__name__\n"
            "print('SEEN', seen)")), root / "attacker" / f"{SET1}.ipynb")
        rows, reports = grade_folder(root, limits=Limits(timeout=10, sandbox=sandbox))
        assert {r["learner"]: r["score"] for r in rows} == {"attacker": 0, "victim": 6}
        seen = eval(next(c.stdout for r in reports for c in r.cells if "SEEN" in c.stdout).split("SEEN", 1)[1])
        for path in (root, victim.parent, victim):
            assert seen[str(path)] in ("PermissionError", "FileNotFoundError"), seen
        if sandbox == "bwrap" or where == "/tmp":  # the fallback reads what is not hidden under /opt
            assert seen[str(other)] in ("PermissionError", "FileNotFoundError"), seen
    finally:
        shutil.rmtree(root, ignore_errors=True)
        shutil.rmtree(other, ignore_errors=True)


def test_the_order_of_grading_does_not_change_the_scores(tmp_path):
    """An attacker graded first or last: the victim's score is the same, and so is the attacker's."""
    scores = []
    for attacker in ("aaa", "zzz"):
        root = tmp_path / attacker
        root.mkdir()
        victim = root / "mmm" / f"{SET1}.ipynb"
        victim.parent.mkdir()
        nbformat.write(_nb("solutions"), victim)
        (root / attacker).mkdir()
        nbformat.write(_with(_nb("student"), f"open({str(victim)!r}, 'w').write('{{}}')\n"
                                             f"open({str(root / 'grades.csv')!r}, 'w').write('x')"),
                       root / attacker / f"{SET1}.ipynb")
        rows, _ = grade_folder(root, root / "grades.csv", limits=Limits(timeout=10))
        scores.append({r["learner"].replace(attacker, "attacker"): r["score"] for r in rows})
    assert scores[0] == scores[1] == {"attacker": 0, "mmm": 6}


def test_the_course_code_a_task_asks_for_is_not_in_the_box_however_it_is_reached(hostile_class, sandbox):
    if not _hides(sandbox):
        pytest.skip(NO_HIDING)
    by_learner = hostile_class[3]
    hidden = "is hidden while grading (--forbid-reference)"
    for learner, task in [*((learner, task) for learner, (task, _) in REFERENCE_ATTACKS.items()),
                          ("relabelled_cells", "eq3_params"), ("moved_answer", "eq3_params"),
                          ("deleted_tests", "table2_row"), ("patched_origin", "lka_module")]:
        tasks = {t.name: t for t in by_learner[learner].tasks}
        assert tasks[task].score == 0, (learner, tasks[task])
        assert hidden in tasks[task].message or learner == "reads_installed_course", (learner, tasks[task].message)
        assert all(t.score == t.max_score for t in tasks.values() if t.name != task) or learner == "patched_origin"
    printed = "".join(c.stdout for c in by_learner["reads_installed_course"].cells)
    refused = r"'(PermissionError|FileNotFoundError)'"  # the installed lka.py cannot even be read, nor found
    assert re.search(rf"refused \[{refused}, {refused}, {refused}, {refused}\]", printed), printed
    assert "no test cell" in {t.name: t.message for t in by_learner["deleted_tests"].tasks}["table2_row"]
    assert by_learner["honest_02"].box["hidden"] == 4  # LKA, its fast path, Attention and the depth-wise conv


def test_reference_use_keeps_its_points_unless_forbidden(tmp_path, capsys):
    nb = _nb("solutions")
    _answer(nb, "eq3_params").source = USES_LKA_PARAMS
    _answer(nb, "table2_row").source = TABLE2_ALONE
    _answer(nb, "best_dilation").source = ("import van_edu.lka as L\n\n"
                                          "def best_dilation(K):\n    return L.best_dilation(K)")
    path = tmp_path / f"{SET1}.ipynb"
    nbformat.write(nb, path)
    report = grade_notebook(path, limits=Limits(timeout=10))
    assert report.score == 6 and "hidden" not in report.box, report.format()
    if not _hides("auto"):
        assert main(["grade", str(path), "--forbid-reference"]) == 2
        assert "needs bubblewrap or Landlock" in capsys.readouterr().err
        return
    assert main(["grade", str(path), "--forbid-reference", "--timeout", "10"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"total\s+4/6", out) and "van_edu.lka.best_dilation is hidden" in out, out
    assert re.search(r"--forbid-reference: \d+ of the course's functions and classes hidden", out), out


def test_forbid_reference_is_refused_where_the_box_cannot_hide_the_course(tmp_path, capsys, monkeypatch):
    from van_edu.grading import grader
    monkeypatch.setattr(grader, "landlock_abi", lambda: 0)
    monkeypatch.setattr(grader, "find_bwrap", lambda: ([], "not here"))
    path = tmp_path / f"{SET1}.ipynb"
    nbformat.write(_nb("solutions"), path)
    assert main(["grade", str(path), "--forbid-reference"]) == 2
    err = capsys.readouterr().err
    assert "--forbid-reference needs bubblewrap or Landlock" in err and len(err.strip().splitlines()) == 1, err
    with pytest.raises(VanEduError, match="needs bubblewrap or Landlock"):
        grade_folder(tmp_path, forbid_reference=True)
    assert main(["grade", str(path), "--sandbox", "bwrap"]) == 2  # forced, and not here: refused, not scored 0
    err = capsys.readouterr().err
    assert "--sandbox bwrap: bubblewrap cannot run here (not here)" in err and len(err.strip().splitlines()) == 1, err


def test_the_source_is_untouched_and_the_max_score_is_the_sources(hostile_class):
    rows = hostile_class[2]
    sets = {p.stem for p in (EXERCISES / "source").glob("*.ipynb")}  # a learner's total counts every set handed in
    total = sum(t.points for n in sets for t in tasks_of(nbformat.read(EXERCISES / "source" / f"{n}.ipynb",
                                                                          as_version=4)))
    assert all(r["max_score"] == total for r in rows)


def test_a_file_that_is_not_a_notebook_is_refused_in_one_line(tmp_path, capsys):
    path = tmp_path / "essay.txt"
    path.write_text("my homework")
    assert main(["grade", str(path)]) == 2
    err = capsys.readouterr().err
    assert "not a Jupyter notebook" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


# --------------------------------------------------------------------------- limits that bound the grader too
def test_replays_after_restarts_stay_within_the_notebook_limit(tmp_path):
    """Cells that sleep only when replayed, and kernels killed to force replays: the notebook's 20 s hold."""
    replay_sleeper = "import os, time\nif os.path.exists('m{0}'):\n    time.sleep(60)\nopen('m{0}', 'w').close()"
    nb = _with(_nb("solutions"), *[replay_sleeper.format(i) for i in range(60)], "import os\nos._exit(1)",
               "import os\nos._exit(1)")
    path = tmp_path / f"{SET1}.ipynb"
    nbformat.write(nb, path)
    start = time.monotonic()
    report = grade_notebook(path, limits=Limits(timeout=5, notebook_timeout=20))
    assert time.monotonic() - start < 50, report.format()  # 80 s and more when replays were not counted
    assert report.score == 0 and all("used up its 20 s" in t.message for t in report.tasks), report.format()


def test_all_the_output_of_a_notebook_is_capped(tmp_path, monkeypatch):
    from van_edu.grading import kernel
    monkeypatch.setattr(kernel, "MAX_OUTPUT_MB", 1)
    nb = _with(_nb("solutions"), *["print('z' * 99_000)"] * 30, at=-1)  # after the tests: they still count
    path = tmp_path / f"{SET1}.ipynb"
    nbformat.write(nb, path)
    report = grade_notebook(path, limits=Limits(timeout=10))
    skipped = [c for c in report.cells if c.skipped and "more than 1 MiB in all" in c.skipped]
    assert report.score == 6 and 10 <= len(skipped) <= 20, [c.skipped for c in report.cells]
    assert max(len(c.stdout) for c in report.cells) < kernel.KEPT_OUTPUT + 100  # kept per cell: bounded
    assert any("more characters cut by the grader" in c.stdout for c in report.cells)


def test_large_kernel_messages_do_not_grow_the_grader(tmp_path):
    """Two 64 MiB messages from the kernel: refused unread (they grew the grader by their size, and more)."""
    nb = _with(_nb("solutions"), (
        "k = get_ipython().kernel\nparent = k.get_parent('shell')\ns = 'x' * 2**26\nfor _ in range(2):\n"
        "    k.session.send(k.iopub_socket, 'stream', {'name': 'stdout', 'text': s}, parent=parent)"), at=-1)
    path = tmp_path / f"{SET1}.ipynb"
    nbformat.write(nb, path)
    script = ("import resource, sys\nfrom van_edu.grading.grader import grade_notebook\n"
              "from van_edu.grading.kernel import Limits\nbase = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
              "r = grade_notebook(sys.argv[1], limits=Limits(timeout=20))\n"
              "print(r.score, (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) // 1024)")
    out = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True, text=True, timeout=300)
    score, grew_mib = out.stdout.split()[-2:]
    assert float(score) == 6 and int(grew_mib) < 64, out.stdout + out.stderr
