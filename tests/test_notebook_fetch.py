"""``van_edu.notebook.fetch_course_files``: how notebooks 07 and 08 get the bundled results on Colab.

Tested against a local folder served as a ``file://`` URL, laid out like the repository's
``notebooks/assets/compare``; nothing here touches the network.
"""
import pytest

from van_edu import notebook


@pytest.fixture
def remote(tmp_path):
    """A folder standing in for the repository's asset folder, with two files."""
    folder = tmp_path / "remote"
    folder.mkdir()
    (folder / "results.json").write_text('{"runs": []}')
    (folder / "van_mini.pt").write_bytes(b"\x00weights" * 1000)
    return folder


def test_missing_files_are_fetched_and_present_ones_kept(tmp_path, remote, monkeypatch, capsys):
    monkeypatch.setattr(notebook, "QUICK", False)
    dest = tmp_path / "assets"
    dest.mkdir()
    (dest / "results.json").write_text("local copy")                 # present: must not be replaced
    ok = notebook.fetch_course_files(["results.json", "van_mini.pt"], dest, "notebooks/assets/compare",
                                     base_url=remote.as_uri())
    assert ok
    assert (dest / "results.json").read_text() == "local copy"
    assert (dest / "van_mini.pt").read_bytes() == (remote / "van_mini.pt").read_bytes()
    assert "fetched 1 file(s)" in capsys.readouterr().out
    assert sorted(p.name for p in dest.iterdir()) == ["results.json", "van_mini.pt"]


def test_a_failed_fetch_says_why_and_leaves_no_partial_file(tmp_path, remote, monkeypatch, capsys):
    monkeypatch.setattr(notebook, "QUICK", False)
    dest = tmp_path / "assets"
    ok = notebook.fetch_course_files(["van_mini.pt", "vit_mini.pt"], dest, "notebooks/assets/compare",
                                     base_url=remote.as_uri())
    assert not ok
    assert "could not fetch vit_mini.pt" in capsys.readouterr().out
    assert sorted(p.name for p in dest.iterdir()) == ["van_mini.pt"]  # no .part file left behind


def test_test_mode_never_downloads(tmp_path, remote, monkeypatch, capsys):
    monkeypatch.setattr(notebook, "QUICK", True)
    dest = tmp_path / "assets"
    assert not notebook.fetch_course_files(["van_mini.pt"], dest, "x", base_url=remote.as_uri())
    assert not dest.exists()
    assert "never downloads" in capsys.readouterr().out


def test_raw_url_is_built_from_the_course_repository():
    url = notebook.raw_url("notebooks/assets/compare/results.json", repo="https://github.com/a/b", branch="dev")
    assert url == "https://raw.githubusercontent.com/a/b/dev/notebooks/assets/compare/results.json"
    assert notebook.raw_url("x").startswith("https://raw.githubusercontent.com/"
                                            + notebook.COURSE_REPO.removeprefix("https://github.com/"))
