"""The German-English data of Debian's trans-de-en (``nni-shiftadd data translation``): cleaning the dictionary's
mark-up, the sentence-like pairs, a split in which no sentence crosses splits, and the tokenised, BPE'd, binarised
result (on a slice of the real dictionary, so that the test takes seconds)."""
from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from nni_shiftadd.cli import main
from nni_shiftadd.config import ConfigError, from_dict
from nni_shiftadd.data.translation import (TranslationDataConfig, check_binarized, clean_entry, detokenise,
                                           extract_pairs, locate_trans_de_en, prepare_translation, split_pairs)


@pytest.mark.parametrize("raw, clean", [
    ("Aalbestand {m}", "Aalbestand"),
    ("etw. in Gang bringen; auf den Weg bringen {vt}", "etw. in Gang bringen"),
    ("Er schlug mir [ugs.] (heftig (sehr)) auf den Kopf.", "Er schlug mir auf den Kopf."),
    ("I have to wait until my relief comes/arrives.", "I have to wait until my relief comes."),
    ("I miss her badly / sorely / tremendously [Am.] [coll.].", "I miss her badly."),
    ("  He   left <him> .  ", "He left."),
])
def test_clean_entry(raw: str, clean: str) -> None:
    assert clean_entry(raw) == clean


def test_extract_pairs_keeps_aligned_sentence_like_pairs() -> None:
    lines = [
        "# comment :: nothing",
        "Haus {n} | Das Haus ist sehr alt. :: house | The house is very old.",
        "Er kommt morgen früh an. | zu kurz :: He arrives early tomorrow. | too short",
        "Nicht ausgerichtet. | Zwei Teile hier. :: Not aligned at all here.",  # 2 vs 1 sub-entries: dropped
        "Das Haus ist sehr alt. :: The house is very old.",  # a duplicate
        "Kein Satzende hier aber lang genug :: No sentence end here but long enough",
    ]
    assert extract_pairs(lines) == [("Das Haus ist sehr alt.", "The house is very old."),
                                    ("Er kommt morgen früh an.", "He arrives early tomorrow.")]


def test_entries_passed_over_unread_could_not_have_been_sentences() -> None:
    """extract_pairs cleans only sub-entries holding a sentence end: on the real dictionary, every sub-entry whose
    cleaned text ends like a sentence holds one (cleaning only removes characters), so the pairs are the same."""
    from nni_shiftadd.data.translation import _SENTENCE_END, _may_end_sentence

    checked = 0
    with open(locate_trans_de_en(), encoding="utf-8", errors="replace") as f:
        for n, line in enumerate(f):
            if n >= 40_000:
                break
            if "::" not in line or line.startswith("#"):
                continue
            for entry in line.rstrip("\n").replace("::", "|").split("|"):
                if clean_entry(entry).endswith(_SENTENCE_END):
                    assert _may_end_sentence(entry), entry
                    checked += 1
    assert checked > 1000


def test_split_keeps_every_sentence_in_one_split() -> None:
    rng = random.Random(0)
    pairs = [(f"Satz {i} ist hier.", f"Sentence {i} is here.") for i in range(3000)]
    # one German sentence with two translations, one English sentence with two sources
    pairs += [("Satz 5 ist hier.", "Another sentence five."), ("Noch ein Satz hier.", "Sentence 7 is here.")]
    rng.shuffle(pairs)
    splits = split_pairs(pairs, valid_size=300, test_size=800)
    assert len(splits["test"]) >= 800 and len(splits["valid"]) >= 300
    assert sum(len(v) for v in splits.values()) == len(pairs)
    for lang in (0, 1):
        seen = [{p[lang] for p in splits[s]} for s in ("train", "valid", "test")]
        assert not (seen[0] & seen[1]) and not (seen[0] & seen[2]) and not (seen[1] & seen[2])
    again = split_pairs(sorted(pairs), 300, 800)
    assert {k: set(v) for k, v in again.items()} == {k: set(v) for k, v in splits.items()}  # order-independent
    with pytest.raises(ValueError, match="too few"):
        split_pairs(pairs[:1000], 300, 800)


def test_prepare_tokenises_learns_bpe_and_binarises(trans_de_en_slice: Path, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NNI_SHIFTADD_CACHE", str(tmp_path / "cache"))
    cfg = from_dict(TranslationDataConfig, {"source": str(trans_de_en_slice), "bpe_merges": 400, "valid_size": 200,
                                            "test_size": 800})
    messages: list[str] = []
    manifest = prepare_translation(cfg, progress=messages.append)
    assert sum(manifest["sizes"].values()) == manifest["pairs"] >= 2200
    assert manifest["sizes"]["test"] >= 800 and manifest["sizes"]["valid"] >= 200
    data_bin = Path(manifest["data_bin"])
    check_binarized(data_bin, "de", "en", ("train", "valid", "test"))
    assert (data_bin / "dict.de.txt").read_text() == (data_bin / "dict.en.txt").read_text()  # joined dictionary
    raw = Path(manifest["raw"])
    test_en = (raw / "test.en").read_text(encoding="utf-8").splitlines()
    assert len(test_en) == manifest["sizes"]["test"] and all(line.strip() for line in test_en)
    bpe = (raw.parent / "bpe" / "train.de").read_text(encoding="utf-8")
    assert "@@ " in bpe  # BPE splits words
    # the tokenised text detokenises back to the raw references
    tok = (raw.parent / "tok" / "test.en").read_text(encoding="utf-8").splitlines()
    back = detokenise(tok[:50], "en")
    assert sum(a == b for a, b in zip(back, test_en[:50])) >= 45
    assert any("binarising" in m for m in messages)
    # a second call reuses the prepared folder
    assert prepare_translation(cfg, progress=messages.append) == manifest and len(messages) == 3
    assert json.loads((raw.parent / "manifest.json").read_text())["source"] == str(trans_de_en_slice)


def test_missing_or_malformed_data_names_the_path_and_the_command(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(FileNotFoundError, match=r"no such directory; prepare it with `nni-shiftadd data translation`"):
        check_binarized(tmp_path / "none", "de", "en")
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "dict.de.txt").write_text("a 1\n")
    with pytest.raises(FileNotFoundError, match=r"half'?: not a fairseq-binarised de-en directory, missing "
                                                r"\['dict\.en\.txt'"):
        check_binarized(tmp_path / "half", "de", "en")
    assert main(["data", "translation", "--binarized", str(tmp_path / "half")]) == 2
    assert "not a fairseq-binarised de-en directory" in capsys.readouterr().err
    assert main(["data", "translation", "--test-size", "100"]) == 2
    assert "field 'test_size': must be >= 800" in capsys.readouterr().err
    assert main(["data", "translation", "--source", str(tmp_path / "none")]) == 2
    assert "field 'source': no such file" in capsys.readouterr().err
    with pytest.raises(ConfigError, match=r"fields 'source_lang', 'target_lang': trans-de-en holds de and en"):
        from_dict(TranslationDataConfig, {"source_lang": "fr"})
    with pytest.raises(FileNotFoundError, match=r"apt-get install -y trans-de-en"):
        locate_trans_de_en(tmp_path / "none")
