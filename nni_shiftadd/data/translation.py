"""German-English translation data: sentence pairs from the Ding dictionary (Debian ``trans-de-en``), tokenised,
joint-BPE'd and binarised with fairseq's preprocessing into the cache; or any fairseq-binarised directory.

``trans-de-en`` (GPL-2+) is read at run time from ``/usr/share/trans/de-en`` (``apt-get install trans-de-en``) or
from the no-root unpack under ``<cache>/data/deb`` that ``install.sh`` makes; nothing of it is committed. Its
lines are ``German :: English``; ``|`` separates aligned sub-entries and ``;`` synonyms, and annotations such as
``{m}``, ``[coll.]`` and ``(...)`` mark up the words. :func:`extract_pairs` strips those, keeps the first synonym of
each sub-entry and the first of ``a / b`` alternatives, and keeps the sentence-like pairs (``min_words`` words or more on each side, both ending in
``.``, ``!`` or ``?``), de-duplicated. :func:`split_pairs` splits them deterministically so that no sentence (German
or English) is in two splits: pairs sharing a sentence are kept together, and the groups are ordered by a hash of
their text, so the split does not depend on the file's order. :func:`prepare_translation` then normalises
punctuation and tokenises with sacremoses, learns a joint BPE with subword-nmt on the training split, and binarises
with ``fairseq-preprocess`` (joined dictionary) into ``<cache>/data/translation/<name>``, once per settings. The untokenised references stay
beside it (``raw/``) for sacrebleu.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import shutil
import struct
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from ..cache import cache_root, file_sha256
from ..lock import process_alive

#: Where ``apt-get install trans-de-en`` puts the dictionary.
TRANS_DE_EN_SYSTEM = Path("/usr/share/trans/de-en")
SPLITS = ("train", "valid", "test")
#: Bumped when the preparation changes what it writes, so that a cached folder of an older recipe is not reused.
PREPARATION_VERSION = 2
_ANNOTATIONS = re.compile(r"\{[^{}]*\}|\[[^\[\]]*\]|\([^()]*\)|<[^<>]*>")
_ALTERNATIVE = re.compile(r"(\S+?)\s*/\s*\S+?([.,!?;:]*)(?=\s|$)")  # "comes/arrives." -> "comes."
_SENTENCE_END = (".", "!", "?")


@dataclasses.dataclass
class TranslationDataConfig:
    """How the translation data is made (the ``data`` block of a translation recipe)."""

    source: str | None = None  # the trans-de-en file; None: the system or no-root install
    source_lang: str = "de"
    target_lang: str = "en"
    min_words: int = 4
    max_words: int = 40
    valid_size: int = 800
    test_size: int = 1000
    bpe_merges: int = 8000
    binarized: str | None = None  # an existing fairseq-binarised directory instead (e.g. WMT'14 En-De)

    def validate(self) -> None:
        for name in ("min_words", "max_words", "valid_size", "test_size", "bpe_merges"):
            if getattr(self, name) < 1:
                raise ValueError(f"field {name!r}: must be >= 1, got {getattr(self, name)}")
        if self.test_size < 800:
            raise ValueError(f"field 'test_size': must be >= 800 for a BLEU score worth reading, got {self.test_size}")
        if self.max_words < self.min_words:
            raise ValueError(f"field 'max_words': {self.max_words} is below min_words {self.min_words}")
        if self.source_lang == self.target_lang:
            raise ValueError(f"fields 'source_lang', 'target_lang': both are {self.source_lang!r}")
        if self.binarized is None and (self.source_lang, self.target_lang) not in (("de", "en"), ("en", "de")):
            raise ValueError(f"fields 'source_lang', 'target_lang': trans-de-en holds de and en, got "
                             f"{self.source_lang!r} -> {self.target_lang!r}")
        if self.source is not None and not Path(self.source).is_file():
            raise ValueError(f"field 'source': no such file {self.source!r} (the trans-de-en dictionary, "
                             f"{TRANS_DE_EN_SYSTEM} after `apt-get install trans-de-en`)")


# --- extraction ---------------------------------------------------------------------------------------------------

def locate_trans_de_en(source: str | os.PathLike[str] | None = None) -> Path:
    """The trans-de-en dictionary file: ``source`` if given, else the system install, else the no-root unpack in
    the cache; ``FileNotFoundError`` naming the paths tried and the commands that install it."""
    if source is not None:
        tried = [Path(source)]
    else:
        tried = [TRANS_DE_EN_SYSTEM, cache_root() / "data" / "deb" / "usr" / "share" / "trans" / "de-en"]
    for path in tried:
        if path.is_file():
            return path
    deb = cache_root() / "data" / "deb"
    raise FileNotFoundError("\n".join([
        "trans-de-en not found; tried:", *(f"  {p}" for p in tried),
        "Install it (nothing is downloaded at run time) with one of:",
        "  sudo apt-get install -y trans-de-en",
        f'  mkdir -p {deb} && cd "$(mktemp -d)" && apt-get download trans-de-en && dpkg-deb -x trans-de-en_*.deb {deb}'
        "    # without root",
        "(./install.sh does this), or give data.binarized: a fairseq-binarised directory."]))


def clean_entry(text: str) -> str:
    """One sub-entry without its annotations (``{m}``, ``[coll.]``, ``(...)``, ``<...>``; nested ones too), with its
    first synonym and the first of each ``a / b`` alternative only, whitespace collapsed."""
    previous = None
    while previous != text:  # innermost first: "(a (b) c)" goes in two passes
        previous, text = text, _ANNOTATIONS.sub(" ", text)
    text = " ".join(text.split(";")[0].split())
    previous = None
    while previous != text:  # of "a / b / c" alternatives, the first
        previous, text = text, _ALTERNATIVE.sub(r"\1\2", text)
    return re.sub(r"\s+([.,!?;:])", r"\1", text)


def _sentence_like(text: str, min_words: int, max_words: int) -> bool:
    words = text.split()
    return min_words <= len(words) <= max_words and text.endswith(_SENTENCE_END)


def _may_end_sentence(raw: str) -> bool:
    return any(end in raw for end in _SENTENCE_END)


def extract_pairs(lines: Iterable[str], min_words: int = 4, max_words: int = 40) -> list[tuple[str, str]]:
    """The sentence-like ``(German, English)`` pairs of trans-de-en ``lines``, de-duplicated, in file order."""
    pairs: dict[tuple[str, str], None] = {}
    for line in lines:
        line = line.rstrip("\n")
        if not line or line.startswith("#") or "::" not in line:
            continue
        german, english = line.split("::", 1)
        de_entries, en_entries = german.split("|"), english.split("|")
        if len(de_entries) != len(en_entries):  # not aligned: nothing to trust
            continue
        for de, en in zip(de_entries, en_entries):
            # cleaning keeps a subset of an entry's characters, so one without a sentence end (most sub-entries:
            # words and phrases) cannot become a sentence and is not cleaned at all
            if not (_may_end_sentence(de) and _may_end_sentence(en)):
                continue
            de, en = clean_entry(de), clean_entry(en)
            if _sentence_like(de, min_words, max_words) and _sentence_like(en, min_words, max_words):
                pairs.setdefault((de, en), None)
    return list(pairs)


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def split_pairs(pairs: Sequence[tuple[str, str]], valid_size: int, test_size: int) -> dict[str, list[tuple[str, str]]]:
    """Deterministic train/valid/test split in which no sentence of either language is in two splits.

    Pairs that share a sentence (one German sentence with two translations, or the reverse) form one group
    (union-find); groups are ordered by a hash of their text and dealt to test until it holds ``test_size`` pairs,
    then to valid, then the rest to train."""
    parent = list(range(len(pairs)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first: dict[tuple[int, str], int] = {}
    for i, (de, en) in enumerate(pairs):
        for key in ((0, de), (1, en)):
            j = first.setdefault(key, i)
            if j != i:
                parent[find(i)] = find(j)
    groups: dict[int, list[int]] = {}
    for i in range(len(pairs)):
        groups.setdefault(find(i), []).append(i)
    ordered = sorted(groups.values(), key=lambda g: _digest("\n".join(f"{pairs[i][0]}\t{pairs[i][1]}" for i in g)))
    if len(pairs) < valid_size + test_size + 1:
        raise ValueError(f"only {len(pairs)} sentence pairs: too few for valid_size {valid_size} + test_size "
                         f"{test_size} and a training split")
    out: dict[str, list[tuple[str, str]]] = {split: [] for split in SPLITS}
    for group in ordered:
        split = "test" if len(out["test"]) < test_size else "valid" if len(out["valid"]) < valid_size else "train"
        out[split].extend(pairs[i] for i in group)
    return out


# --- tokenisation, BPE, binarisation ----------------------------------------------------------------------------

def normalise(lines: Iterable[str], lang: str) -> list[str]:
    """Moses punctuation normalisation (typographic quotes and apostrophes to ASCII, spacing), so that the
    tokeniser splits ``can’t`` as it splits ``can't``; the raw references are written normalised too."""
    from sacremoses import MosesPunctNormalizer

    normaliser = MosesPunctNormalizer(lang=lang)
    return [normaliser.normalize(line).strip() for line in lines]


def _tokenise(lines: Iterable[str], lang: str) -> Iterator[str]:
    from sacremoses import MosesTokenizer

    tokenizer = MosesTokenizer(lang=lang)
    for line in lines:
        yield tokenizer.tokenize(line, return_str=True, escape=False)


def detokenise(lines: Iterable[str], lang: str) -> list[str]:
    """Moses-detokenised ``lines`` (after BPE removal): what sacrebleu compares with the raw references."""
    from sacremoses import MosesDetokenizer

    detokenizer = MosesDetokenizer(lang=lang)
    return [detokenizer.detokenize(line.split()) for line in lines]


def _write_lines(path: Path, lines: Iterable[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for line in lines:
            f.write(line + "\n")


def _read_lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


def _learn_bpe(files: Sequence[Path], codes: Path, merges: int) -> None:
    from subword_nmt.learn_bpe import learn_bpe

    with tempfile.TemporaryDirectory() as tmp:
        joined = Path(tmp) / "joined.txt"
        with open(joined, "w", encoding="utf-8") as out:
            for file in files:
                out.write(file.read_text(encoding="utf-8"))
        with open(joined, encoding="utf-8") as inp, open(codes, "w", encoding="utf-8") as out:
            learn_bpe(inp, out, merges, min_frequency=2, is_dict=False)


def _apply_bpe(codes: Path, src: Path, dst: Path) -> None:
    from subword_nmt.apply_bpe import BPE

    with open(codes, encoding="utf-8") as f:
        bpe = BPE(f)
    _write_lines(dst, (bpe.process_line(line) for line in _read_lines(src)))


def import_fairseq() -> Any:
    """``import fairseq`` without what its import does to logging: one of its modules
    (``models/wav2vec/wav2vec2_classification.py``) calls ``logging.basicConfig(level=DEBUG)``, after which every
    library in the process prints its debug messages (matplotlib's font search, hydra's). The root logger goes back
    to INFO, the level fairseq's command-line tools log their progress at."""
    import logging

    import fairseq

    root = logging.getLogger()
    if root.level < logging.INFO:
        root.setLevel(logging.INFO)
    return fairseq


def _binarise(bpe_dir: Path, dest: Path, src: str, tgt: str) -> None:
    import_fairseq()
    from fairseq import options
    from fairseq_cli import preprocess

    parser = options.get_preprocessing_parser()
    args = parser.parse_args([
        "--source-lang", src, "--target-lang", tgt, "--joined-dictionary", "--workers", "1",
        "--trainpref", str(bpe_dir / "train"), "--validpref", str(bpe_dir / "valid"),
        "--testpref", str(bpe_dir / "test"), "--destdir", str(dest)])
    preprocess.main(args)


def dataset_dir(cfg: TranslationDataConfig) -> Path:
    """Where :func:`prepare_translation` puts the data of ``cfg`` (one folder per settings)."""
    settings = {k: v for k, v in dataclasses.asdict(cfg).items() if k != "binarized"}
    settings["version"] = PREPARATION_VERSION
    tag = _digest(json.dumps(settings, sort_keys=True))[:10]
    return cache_root() / "data" / "translation" / f"trans-de-en-{cfg.source_lang}{cfg.target_lang}-{tag}"


def check_binarized(path: str | os.PathLike[str], source_lang: str, target_lang: str,
                    splits: Sequence[str] = ("train", "valid")) -> dict[str, Any]:
    """What :func:`inspect_binarized` finds in ``path`` (and ``path`` itself) if it is a fairseq-binarised
    translation directory for ``source_lang -> target_lang`` (both dictionaries, and ``.bin``/``.idx`` of both
    languages for every split in ``splits``); ``FileNotFoundError`` naming the path, what is missing and the command
    that prepares it otherwise, ``ValueError`` naming the file whose content is wrong."""
    path = Path(path)
    how = ("prepare it with `nni-shiftadd data translation` (trans-de-en), or binarise your corpus with "
           f"`fairseq-preprocess --source-lang {source_lang} --target-lang {target_lang} --destdir {path} ...`")
    if not path.is_dir():
        raise FileNotFoundError(f"translation data {str(path)!r}: no such directory; {how}")
    wanted = [f"dict.{lang}.txt" for lang in (source_lang, target_lang)]
    for split in splits:
        for lang in (source_lang, target_lang):
            wanted += [f"{split}.{source_lang}-{target_lang}.{lang}.{ext}" for ext in ("bin", "idx")]
    missing = [name for name in wanted if not (path / name).is_file()]
    if missing:
        raise FileNotFoundError(f"translation data {str(path)!r}: not a fairseq-binarised {source_lang}-{target_lang} "
                                f"directory, missing {missing[:4]}{' ...' if len(missing) > 4 else ''}; {how}")
    return {"path": path, **inspect_binarized(path, source_lang, target_lang, splits)}


def dictionary_size(path: str | os.PathLike[str]) -> int:
    """The number of symbols of a fairseq ``dict.<lang>.txt``: its lines and fairseq's four special symbols."""
    with open(path, encoding="utf-8") as f:
        return 4 + sum(1 for line in f if line.strip())


def inspect_binarized(path: str | os.PathLike[str], source_lang: str, target_lang: str,
                      splits: Sequence[str] = ("train", "valid")) -> dict[str, Any]:
    """Check a binarised directory's content, not only its files: both dictionaries non-empty; every split's index
    readable (fairseq's ``mmap`` format), its ``.bin`` exactly as long as the index says, its token ids inside the
    dictionary, and as many source as target sentences. ``ValueError`` naming the file otherwise. Returns the
    sentence counts and the longest sentence in tokens (``max_tokens`` must hold it)."""
    import numpy as np

    import_fairseq()
    from fairseq.data.indexed_dataset import MMapIndexedDataset

    path = Path(path)
    sizes = {}
    for lang in (source_lang, target_lang):
        sizes[lang] = dictionary_size(path / f"dict.{lang}.txt")
        if sizes[lang] == 4:
            raise ValueError(f"translation data {str(path / f'dict.{lang}.txt')!r}: the dictionary is empty; "
                             "binarise the corpus again (fairseq-preprocess)")
    counts: dict[str, int] = {}
    longest = 0
    for split in splits:
        per_lang = {}
        for lang in (source_lang, target_lang):
            prefix = path / f"{split}.{source_lang}-{target_lang}.{lang}"
            try:
                index = MMapIndexedDataset.Index(f"{prefix}.idx")
            except (AssertionError, ValueError, KeyError, OSError, struct.error) as err:
                raise ValueError(f"translation data {str(prefix) + '.idx'!r}: not a readable fairseq mmap index "
                                 f"({type(err).__name__}: {err}); binarise with fairseq-preprocess --dataset-impl "
                                 "mmap") from None
            n = len(index)
            pointer, size = index[n - 1] if n else (0, 0)
            expected = int(pointer) + int(size) * index.dtype().itemsize
            actual = Path(f"{prefix}.bin").stat().st_size
            if actual != expected:
                raise ValueError(f"translation data {str(prefix) + '.bin'!r}: {actual} bytes, but its index says "
                                 f"{expected}: truncated or from another binarisation; binarise the corpus again")
            if actual:
                top = int(np.memmap(f"{prefix}.bin", dtype=index.dtype, mode="r").max())
                if top >= sizes[lang]:
                    raise ValueError(f"translation data {str(prefix) + '.bin'!r}: token id {top} is outside "
                                     f"dict.{lang}.txt ({sizes[lang]} symbols): the dictionary is not the one it "
                                     "was binarised with")
            per_lang[lang] = n
            longest = max(longest, int(index.sizes.max()) if n else 0)
        if per_lang[source_lang] != per_lang[target_lang]:
            raise ValueError(f"translation data {str(path)!r}: split {split!r} has {per_lang[source_lang]} "
                             f"{source_lang} but {per_lang[target_lang]} {target_lang} sentences")
        counts[split] = per_lang[source_lang]
    return {"sentences": counts, "longest": longest, "dictionary": sizes}


def data_identity(data_bin: str | os.PathLike[str], source_lang: str, target_lang: str) -> dict[str, str]:
    """SHA-256 digests of the files a model trained on ``data_bin`` depends on: both dictionaries (the embedding
    rows) and the training split's indexes (the batches)."""
    pair = f"{source_lang}-{target_lang}"
    names = [f"dict.{source_lang}.txt", f"dict.{target_lang}.txt", f"train.{pair}.{source_lang}.idx",
             f"train.{pair}.{target_lang}.idx"]
    return {name: file_sha256(Path(data_bin) / name) for name in names}


def prepare_translation(cfg: TranslationDataConfig, progress: Any = print) -> dict[str, Any]:
    """Make (once) and return the manifest of the translation data of ``cfg``: the binarised directory, the raw
    references and the split sizes. A ``binarized`` directory is only checked."""
    if cfg.binarized is not None:
        info = check_binarized(cfg.binarized, cfg.source_lang, cfg.target_lang)
        return {"data_bin": str(info["path"]), "raw": None, "source": None, "sizes": None,
                "longest": info["longest"]}
    root = dataset_dir(cfg)
    manifest_file = root / "manifest.json"
    if manifest_file.is_file():
        manifest = json.loads(manifest_file.read_text())
        info = check_binarized(manifest["data_bin"], cfg.source_lang, cfg.target_lang, SPLITS)
        return {**manifest, "longest": info["longest"]}
    source = locate_trans_de_en(cfg.source)
    progress(f"translation data: extracting sentence pairs from {source}")
    with open(source, encoding="utf-8", errors="replace") as f:
        pairs = extract_pairs(f, cfg.min_words, cfg.max_words)
    splits = split_pairs(pairs, cfg.valid_size, cfg.test_size)
    src, tgt = cfg.source_lang, cfg.target_lang
    for stale in root.parent.glob(root.name + ".building*"):  # left by a process killed while building
        pid = stale.name.rsplit(".building", 1)[1]
        if not pid.isdigit() or not process_alive(int(pid)):
            shutil.rmtree(stale, ignore_errors=True)
    building = root.with_name(root.name + f".building{os.getpid()}")
    shutil.rmtree(building, ignore_errors=True)
    try:
        for split, items in splits.items():
            de = [p[0] for p in items]
            en = [p[1] for p in items]
            by_lang = {"de": normalise(de, "de"), "en": normalise(en, "en")}
            for lang in (src, tgt):
                _write_lines(building / "raw" / f"{split}.{lang}", by_lang[lang])
                _write_lines(building / "tok" / f"{split}.{lang}", _tokenise(by_lang[lang], lang))
        progress(f"translation data: learning a joint BPE of {cfg.bpe_merges} merges on {len(splits['train'])} "
                 "training pairs")
        codes = building / "bpe" / "codes"
        codes.parent.mkdir(parents=True, exist_ok=True)
        _learn_bpe([building / "tok" / f"train.{lang}" for lang in (src, tgt)], codes, cfg.bpe_merges)
        for split in SPLITS:
            for lang in (src, tgt):
                _apply_bpe(codes, building / "tok" / f"{split}.{lang}", building / "bpe" / f"{split}.{lang}")
        progress("translation data: binarising with fairseq-preprocess")
        _binarise(building / "bpe", building / "data-bin", src, tgt)
        manifest = {"data_bin": str(root / "data-bin"), "raw": str(root / "raw"), "source": str(source),
                    "source_sha256": file_sha256(source), "pairs": len(pairs),
                    "sizes": {split: len(items) for split, items in splits.items()},
                    "config": dataclasses.asdict(cfg), "source_lang": src, "target_lang": tgt}
        (building / "manifest.json").write_text(json.dumps(manifest, indent=1))
        if root.exists():  # a half-made folder of a killed run
            shutil.rmtree(root)
        os.replace(building, root)
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        raise
    info = check_binarized(manifest["data_bin"], src, tgt, SPLITS)
    return {**manifest, "longest": info["longest"]}


def references_dir(data_bin: str | os.PathLike[str]) -> Path | None:
    """The untokenised references (``raw/``) that :func:`prepare_translation` keeps beside a data directory it
    made, or ``None`` for any other binarised directory (BLEU then falls back on the binarised targets)."""
    raw = Path(data_bin).parent / "raw"
    return raw if (Path(data_bin).parent / "manifest.json").is_file() and raw.is_dir() else None
