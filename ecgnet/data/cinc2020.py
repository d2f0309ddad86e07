"""``cinc2020``: the PhysioNet/Computing in Cardiology Challenge 2020 training set (Perez Alday et
al., Physiol. Meas. 41 (2020) 124003): 43,101 12-lead ECGs from six source databases, labelled
with SNOMED CT codes, scored on 27 diagnoses.

Layout read: every ``*.hea`` under ``root``, searched recursively, with the ``.mat`` beside it, so
both published layouts work: PhysioNet's ``training/<source>/g*/`` (challenge-2020 1.0.2) and the
challenge's tarballs (``Training_WFDB/``, ``Training_2/``, ``Training_StPetersburg/``,
``Training_PTB/``, ``WFDB/``). Per record::

    A0001.hea   WFDB header: 12 signal lines (gain, baseline, lead name), then comments
                #Age: 74 / #Sex: Male / #Dx: 59118001,426783006 / #Rx / #Hx / #Sx
    A0001.mat   MATLAB v4, variable ``val``: int16 (12, samples); the header points at it as
                WFDB format 16 with a 24-byte offset

Reading follows the official ``load_challenge_data`` (``scipy.io.loadmat(...)['val']`` plus the
header): ``load`` reads the header with ``wfdb.rdheader`` and the samples with
``scipy.io.loadmat``, checks 12 standard leads and the length, and converts to mV
((val - baseline) / gain). The record scan in ``records()`` needs only the comments, so it uses
wfdb's comment split (``wfdb.io.header.parse_header_content``): a full ``rdheader`` costs ~3 ms a
file (its signal lines go through pandas), 2.5 minutes for 43k headers on every run.

Sampling rates: 500 Hz (most), 257 Hz (St Petersburg INCART) and 1000 Hz (PTB). A RecordSet has
one rate, so ``load`` resamples every record to ``fs`` (polyphase, ``transforms.resample``) and
``records().fs`` is ``fs``. To train at a lower rate set ``data.fs`` (one resampling), not
``preprocess.fs`` (a second one). Lengths vary (PTB-XL, Georgia 10 s; CPSC 6-60 s; St Petersburg 30 min),
so ``record_length_s`` is None and ``input.window_s`` chooses the crops and evaluation windows.

Labels: the 27 scored diagnoses of ``dx_mapping_scored.csv`` with the challenge's three
equivalent pairs merged (713427006/59118001 CRBBB|RBBB, 284470004/63593006 PAC|SVPB,
427172004/17338001 PVC|VPB) -> 24 multi-hot float32 columns, in the order of the official
``weights.csv`` (the scorer's class order, :mod:`ecgnet.challenge2020`). Class names are the
abbreviations (``IAVB``, ``AF``, ..., ``NSR``), merged pairs joined by ``|``; ``class_codes``
holds the representative SNOMED CT code of each column. Unscored codes are ignored; codes in
neither table are ignored too, and counted in one warning. Records whose codes are all unscored
stay as all-zero rows (``keep_unscored: true``, as the challenge kept them in its data; they
add nothing to the challenge score, and teach the model to answer nothing for them; their count
is logged); ``keep_unscored: false`` leaves them out (``skipped["no scored diagnosis"]``).
A record with no code of either table (an empty ``#Dx`` or only unknown codes) has no known
label at all, so it is left out (``skipped["no known #Dx code"]``) rather than taken as "no
scored diagnosis".

Groups: the challenge publishes no patient ids, so each record is its own group. Some sources
hold several records per patient (PTB: 516 records from 290 patients; St Petersburg: 74 from 32),
so a random split can put one patient on both sides. Folds: the source database, from the
record name's prefix (1 CPSC ``A``, 2 CPSC-Extra ``Q``, 3 StPetersburg ``I``, 4 PTB ``S``, 5
PTB-XL ``HR``, 6 Georgia ``E``; 0 for any other name), for ``split.type: predefined`` (e.g.
``train_folds: [1, 2, 3, 4, 5], test_folds: [6]`` tests on an unseen hospital).

``header_info`` (a DataFrame indexed by record id) keeps what the headers say beyond the
labels: ``age`` (float, NaN when unknown), ``sex`` (as written, e.g. Male/Female), ``source``,
``dx`` (the codes as written) and ``path``. The models do not use it.

Headers without a ``.mat`` beside them (``skipped[".mat missing"]``) or without a ``#Dx`` line
(``skipped["no #Dx line"]``) are left out; an unreadable header or .mat raises DataError from
``load``, so the framework counts and skips the record.
"""
from __future__ import annotations

import hashlib
import json
import logging
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.io
import wfdb
from wfdb.io.header import parse_header_content

from ..challenge2020 import (NORMAL_CLASS, WEIGHTS_CSV, challenge_metric, load_weights, multi_hot,
                             replace_equivalent_classes)
from ..registry import DATASETS, ConfigError, DataError
from .base import ECGAdapter, RecordSet
from .cache import file_fingerprint
from .transforms import resample

log = logging.getLogger(__name__)

LEADS = ["I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6"]
RESOURCES = Path(__file__).with_name("resources")
SCORED_CSV = RESOURCES / "cinc2020_dx_mapping_scored.csv"
UNSCORED_CSV = RESOURCES / "cinc2020_dx_mapping_unscored.csv"
# (fold, source database, record name prefix); a name is the prefix followed by digits
SOURCES = ((1, "CPSC", "A"), (2, "CPSC-Extra", "Q"), (3, "StPetersburg", "I"), (4, "PTB", "S"),
           (5, "PTB-XL", "HR"), (6, "Georgia", "E"))
READER_VERSION = 1                      # bump when load() changes what it returns
SETUP = "experiments/cinc2020/setup.sh"


def source_of(record_id: str) -> tuple[int, str]:
    """(fold, source database) from the record name's prefix; (0, "other") when unknown."""
    for fold, name, prefix in SOURCES:
        if record_id.startswith(prefix) and record_id[len(prefix):].isdigit():
            return fold, name
    return 0, "other"


def read_comments(path: Path) -> dict[str, str]:
    """Header comments ``#Key: value`` -> {key: value}, split from the header lines by wfdb."""
    text = path.read_text(encoding="ascii", errors="ignore")     # as wfdb.rdheader opens it
    _, comments = parse_header_content(text)
    out = {}
    for line in comments:
        key, sep, value = line.lstrip("#").partition(":")
        if sep:
            out.setdefault(key.strip(), value.strip())
    return out


def read_scored_classes() -> tuple[list[str], list[str], set[str]]:
    """-> (representative codes in the scorer's order, class names, every scored code)."""
    codes, _ = load_weights(WEIGHTS_CSV)
    table = pd.read_csv(SCORED_CSV, dtype=str)
    abbreviation = dict(zip(table["SNOMED CT Code"].str.strip(), table["Abbreviation"].str.strip()))
    members: dict[str, list[str]] = {}
    for code in abbreviation:
        members.setdefault(replace_equivalent_classes([code])[0], []).append(code)
    if set(members) != set(codes):
        raise DataError(f"{SCORED_CSV} and {WEIGHTS_CSV} list different classes; restore the shipped files")
    names = ["|".join(sorted(abbreviation[c] for c in members[code])) for code in codes]
    return codes, names, set(abbreviation)


@DATASETS.register("cinc2020")
class CinC2020(ECGAdapter):
    """
    Args:
        root: folder holding the challenge's records (searched recursively for ``*.hea``).
        fs: every record is resampled to this rate (Hz) when it is loaded.
        keep_unscored: keep records without a scored diagnosis as all-zero label rows.
        strict: an unreadable record stops the run instead of being skipped and counted.
    """

    record_length_s = None

    def __init__(self, root: str, fs: float = 500.0, keep_unscored: bool = True, strict: bool = False):
        if fs <= 0:
            raise ConfigError(f"data.fs: must be a positive rate in Hz, got {fs}")
        self.root = Path(root).expanduser()
        if not self.root.is_dir():
            raise DataError(f"{root}: CinC 2020 not found; download it with {SETUP}")
        self.fs, self.keep_unscored, self.strict = float(fs), keep_unscored, strict
        self.class_codes, self.class_names, scored = read_scored_classes()
        self.weights = load_weights(WEIGHTS_CSV)[1]
        unscored = set(pd.read_csv(UNSCORED_CSV, dtype=str)["SNOMED CT Code"].str.strip())
        self._records, self.paths, self.header_info = self._scan(scored | unscored)

    def _scan(self, known_codes: set[str]) -> tuple[RecordSet, list[Path], pd.DataFrame]:
        headers = sorted((p for p in self.root.rglob("*.hea") if not p.name.startswith(".")),
                         key=lambda p: (p.stem, str(p)))
        if not headers:
            raise DataError(f"{self.root}: no CinC 2020 records (*.hea) in it; download them with {SETUP}")
        seen: dict[str, Path] = {}
        for path in headers:
            if path.stem in seen:
                raise DataError(f"record {path.stem} is in {seen[path.stem]} and {path}; keep one copy under "
                                f"{self.root}")
            seen[path.stem] = path
        skipped: dict[str, list[str]] = {}
        rows, unknown = [], Counter()
        for path in headers:
            rid = path.stem
            if not path.with_suffix(".mat").is_file():
                skipped.setdefault(".mat missing", []).append(rid)
                continue
            info = read_comments(path)
            if "Dx" not in info:
                skipped.setdefault("no #Dx line", []).append(rid)
                continue
            codes = [c.strip() for c in info["Dx"].split(",") if c.strip()]
            unknown.update(c for c in codes if c not in known_codes)
            if not any(c in known_codes for c in codes):     # an all-zero row would claim "nothing scored"
                skipped.setdefault("no known #Dx code", []).append(rid)
                continue
            fold, source = source_of(rid)
            rows.append({"id": rid, "age": float(pd.to_numeric(info.get("Age", "NaN"), errors="coerce")),
                         "sex": info.get("Sex"), "source": source, "fold": fold, "dx": ",".join(codes),
                         "path": path})
        if unknown:
            log.warning("%s: %d Dx code(s) in neither dx_mapping table were ignored: %s", self.root,
                        sum(unknown.values()), ", ".join(f"{c} ({n}x)" for c, n in unknown.most_common(10)))
        if not rows:
            raise DataError(f"{self.root}: no readable CinC 2020 records (.hea with .mat and a known #Dx code); "
                            f"download them with {SETUP}")
        info = pd.DataFrame(rows).set_index("id")
        labels = multi_hot([dx.split(",") for dx in info["dx"]], self.class_codes)
        scored = labels.any(axis=1)
        if not self.keep_unscored:
            if not scored.all():
                skipped["no scored diagnosis"] = info.index[~scored].tolist()
            info, labels = info[scored], labels[scored]
        elif not scored.all():
            log.info("%s: %d record(s) with only unscored diagnoses kept as all-zero label rows (keep_unscored: "
                     "true)", self.root, int((~scored).sum()))
        ids = info.index.tolist()
        records = RecordSet(ids=ids, groups=list(ids),   # no patient ids are published: one group per record
                            labels=labels.astype(np.float32), class_names=list(self.class_names), fs=self.fs,
                            leads=list(LEADS), folds=info["fold"].to_numpy(np.int64), skipped=skipped)
        return records, info["path"].tolist(), info.drop(columns="fold")

    def records(self) -> RecordSet:
        return self._records

    def load(self, index: int) -> np.ndarray:
        """Record ``index`` in mV as float32 (12, samples) at ``fs``."""
        hea = self.paths[index]
        mat = hea.with_suffix(".mat")
        try:
            header = wfdb.rdheader(str(hea.with_suffix("")))
        except (OSError, ValueError, IndexError) as err:     # wfdb: HeaderSyntaxError is a ValueError
            raise DataError(f"{hea}: unreadable header ({err})") from None
        try:
            val = scipy.io.loadmat(str(mat))["val"]
        except KeyError:
            raise DataError(f"{mat}: no variable 'val'") from None
        except (OSError, ValueError, IndexError, scipy.io.matlab.MatReadError) as err:
            raise DataError(f"{mat}: unreadable ({err})") from None
        names = [str(n).upper() for n in (header.sig_name or [])]
        if names != [lead.upper() for lead in LEADS] or not header.fs:
            raise DataError(f"{hea}: expected the 12 standard leads {' '.join(LEADS)} and a rate, "
                            f"got {header.sig_name} at {header.fs} Hz")
        if val.ndim != 2 or val.shape[0] != len(LEADS) or (header.sig_len and val.shape[1] != header.sig_len):
            raise DataError(f"{mat}: 'val' has shape {val.shape}, the header says ({len(LEADS)}, {header.sig_len}); "
                            "the file is truncated or does not belong to the header")
        gain = np.asarray(header.adc_gain, np.float64)
        gain[gain == 0] = 200.0                                # WFDB: a gain of 0 means the default, 200
        baseline = np.asarray(header.baseline, np.float64)
        x = ((val - baseline[:, None]) / gain[:, None]).astype(np.float32)
        return resample(x, float(header.fs), self.fs)

    def cache_key(self) -> str:
        files = [SCORED_CSV, WEIGHTS_CSV] + [p.with_suffix(ext) for p in self.paths for ext in (".hea", ".mat")]
        digest = hashlib.sha256(json.dumps(file_fingerprint(files)).encode()).hexdigest()
        return json.dumps({"reader": READER_VERSION, "files": digest, "n_files": len(files),
                           "root": str(self.root.resolve()), "fs": self.fs, "keep_unscored": self.keep_unscored},
                          sort_keys=True)

    def dataset_metrics(self, y_true: np.ndarray, probs: np.ndarray, decisions: np.ndarray) -> dict:
        """``challenge_score``: the official CinC 2020 score of the thresholded decisions."""
        return {"challenge_score": challenge_metric(self.weights, y_true, decisions, self.class_codes, NORMAL_CLASS)}
