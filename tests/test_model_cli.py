"""`python cli.py model ...`: list, embed (ours vs HF, --json and the table), one-line errors with exit 2."""
import json

import numpy as np
import pytest

from triptych import cli
from triptych.pretrained import ModelMissingError, minilm

SENTENCES = ["A cat sat on the mat.", "A kitten rested on the rug.", "The stock market fell sharply today."]


def test_list_json_names_both_models(capsys):
    assert cli.main(["model", "list", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert set(rows) == {"smollm2", "minilm"}
    assert rows["minilm"]["package"] == minilm.PACKAGE


def test_embed_json_cosines_against_hf_computed_here(capsys):
    try:
        minilm.model_path()
    except ModelMissingError as e:
        pytest.skip(str(e))
    assert cli.main(["model", "embed", *SENTENCES, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["ok"] and out["sentences"] == SENTENCES
    # The reference computed independently of the command: HF AutoModel, mean pooling, normalisation.
    ref = minilm.hf_embed(SENTENCES)
    np.testing.assert_allclose(out["cosine_hf"], ref @ ref.T, atol=1e-6)
    np.testing.assert_allclose(out["cosine"], ref @ ref.T, atol=1e-5)
    # The sentences about cats are closer to each other than to the stock market: a real model, not noise.
    cos = np.array(out["cosine"])
    assert cos[0, 1] > cos[0, 2] + 0.3 and cos[0, 1] > cos[1, 2] + 0.3


def test_embed_table_shows_every_sentence(capsys):
    try:
        minilm.model_path()
    except ModelMissingError as e:
        pytest.skip(str(e))
    assert cli.main(["model", "embed", SENTENCES[0], SENTENCES[2]]) == 0
    text = capsys.readouterr().out
    assert "Cosine similarity" in text and "stock market" in text and "within" in text


@pytest.mark.parametrize("argv, message", [
    (["model", "embed", "only one"], "expected two or more sentences"),
    (["model", "embed", "a sentence", "  "], "argument sentences: expected non-empty text"),
])
def test_bad_input_is_one_line_and_exit_2(capsys, argv, message):
    try:
        code = cli.main(argv)
    except SystemExit as e:  # empty text is refused as the command line is read
        code = e.code
    assert code == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
