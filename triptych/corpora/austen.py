"""Jane Austen's six novels (Debian r-cran-janeaustenr), one string per book.

About 4.0 M characters in all, 81 distinct characters, no licence boilerplate: small enough to
train a character-level language model on a laptop, and labelled by book for 6-way classification.
"""
from __future__ import annotations

import json

from triptych.corpora import COMPLETE_MARKER, require

__all__ = ["load_austen_books", "load_austen_text"]


def load_austen_books() -> dict[str, str]:
    """Book title -> full text (lines joined by "\\n"), in janeaustenr's order:
    Sense & Sensibility, Pride & Prejudice, Mansfield Park, Emma, Northanger Abbey, Persuasion."""
    folder = require("austen")
    manifest = json.loads((folder / COMPLETE_MARKER).read_text(encoding="utf-8"))
    return {book["title"]: (folder / book["file"]).read_text(encoding="utf-8") for book in manifest["books"]}


def load_austen_text() -> str:
    """All six novels in one string, a blank line between books."""
    return "\n\n".join(load_austen_books().values())
