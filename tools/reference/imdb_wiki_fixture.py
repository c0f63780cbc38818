"""The IMDB-WIKI preparation fixture (tests/data/imdb_wiki_prep, docs/data-imdb-wiki.md).

Writes a small imdb.mat laid out as the official one (a 1x1 struct `imdb` with 1xN rows dob,
photo_taken, full_path, gender, face_location, face_score, second_face_score, name, celeb_id,
celeb_names; MATLAB v5 with compression, as scipy.io.savemat writes it), one solid-colour JPEG
per record (Pillow), and what nddr-prepare-imdb-wiki must write for it with
--size 16 --seed 0 (the defaults otherwise):
  expected/train.txt, expected/test.txt, expected/crops.tsv  (byte for byte)
  expected/colors.tsv   record, R G B of its JPEG (the crop's mean colour, within JPEG error)
a wiki.mat of the same records without celeb_id (subjects by name), and corrupt variants, each with the error message part the program must print:
  corrupt/*.mat, corrupt/expected_errors.tsv (file, then substrings of the one-line error)
The filters, age rule, split and crop box are re-implemented here independently of the C++
(formats-spec.md §5); the subject shuffle uses an mt19937_64 written out below.
Run: /work/venv-data/bin/python tools/reference/imdb_wiki_fixture.py   (scipy, numpy, pillow)
"""
import datetime
import math
import os
import shutil

import numpy as np
import scipy.io
from PIL import Image

OUT = os.path.join(os.path.dirname(__file__), "..", "..", "tests", "data", "imdb_wiki_prep")
MIN_SCORE, MAX_SECOND, MARGIN, TEST_FRACTION, SEED = 1.0, 0.0, 0.4, 0.16, 0

NAMES = ["Ann A", "Bob B", "Cid C", "Dee D", "Eve E", "Fay F", "Gus G"]
# (celeb_id, dob, photo_taken, gender, face_score, second_face_score, box, image size (w, h))
NAN, INF = float("nan"), float("inf")
RECORDS = [
    (1, (1980, 3, 15), 2010, 1.0, 2.5, NAN, (20, 10, 40, 30), (64, 48)),
    (1, (1980, 3, 15), 2012, 1.0, 3.0, NAN, (1, 1, 20, 16), (64, 48)),  # clipped at the corner
    (2, (1990, 8, 1), 2015, 0.0, 1.5, -1.0, (30.4, 12.6, 50.2, 40.9), (64, 48)),
    (2, (1990, 8, 1), 2016, 0.0, -INF, NAN, (1, 1, 64, 48), (64, 48)),  # no face found
    (3, (1975, 1, 1), 2000, 0.0, 2.0, 1.5, (10, 10, 30, 30), (64, 48)),  # a second face
    (3, (1975, 1, 1), 2000, 0.0, 2.0, NAN, (10, 10, 30, 30), (48, 64)),
    (4, (1960, 7, 1), 2001, NAN, 2.0, NAN, (10, 10, 30, 30), (64, 48)),  # gender unknown
    (4, (1890, 5, 5), 2010, 1.0, 2.0, NAN, (10, 10, 30, 30), (64, 48)),  # age 120
    (4, (1960, 7, 1), 2001, 1.0, 1.0, NAN, (5, 6, 60, 44), (64, 48)),
    (5, (1985, 2, 2), 2010, 1.0, 2.0, NAN, (10, 10, 30, 30), None),  # image missing
    (5, (1985, 2, 2), 2010, 1.0, 0.5, NAN, (10, 10, 30, 30), (64, 48)),  # low face score
    (6, (2005, 1, 1), 2004, 0.0, 2.0, NAN, (10, 10, 30, 30), (64, 48)),  # age -1
    (7, (1999, 12, 31), 2010, 1.0, 4.0, NAN, (33, 20, 45, 35), (64, 48)),
]


class MT19937_64:
    def __init__(self, seed):
        self.mt = [seed & (2**64 - 1)]
        for i in range(1, 312):
            prev = self.mt[-1]
            self.mt.append((6364136223846793005 * (prev ^ (prev >> 62)) + i) & (2**64 - 1))
        self.index = 312

    def __call__(self):
        if self.index >= 312:
            lower, upper = (1 << 31) - 1, (2**64 - 1) & ~((1 << 31) - 1)
            for i in range(312):
                x = (self.mt[i] & upper) | (self.mt[(i + 1) % 312] & lower)
                xa = x >> 1
                if x & 1:
                    xa ^= 0xB5026F5AA96619E9
                self.mt[i] = self.mt[(i + 156) % 312] ^ xa
            self.index = 0
        y = self.mt[self.index]
        self.index += 1
        y ^= (y >> 29) & 0x5555555555555555
        y ^= (y << 17) & 0x71D67FFFEDA60000
        y ^= (y << 37) & 0xFFF7EEE000000000
        y ^= y >> 43
        return y & (2**64 - 1)


def datenum(ymd):
    return float(datetime.date(*ymd).toordinal() + 366)


def age_of(dob, year):
    born = datetime.date.fromordinal(int(dob) - 366)
    return year - born.year - (1 if born.month >= 7 else 0)


def crop(box, w, h):
    x1, y1, x2, y2 = box
    bw, bh = x2 - x1 + 1, y2 - y1 + 1
    r = lambda v: int(math.floor(v + 0.5))
    c = [r(x1 - MARGIN * bw) - 1, r(y1 - MARGIN * bh) - 1, r(x2 + MARGIN * bw), r(y2 + MARGIN * bh)]
    return [min(max(c[0], 0), w), min(max(c[1], 0), h), min(max(c[2], 0), w), min(max(c[3], 0), h)]


def colour(i):
    return (40 + 15 * i, 200 - 12 * i, (90 + 37 * i) % 256)


def struct(records, **override):
    n = len(records)
    cells = lambda xs: np.array(xs + [None], dtype=object)[:-1].reshape(1, n)
    s = {
        "dob": np.array([[datenum(r[1]) for r in records]]),
        "photo_taken": np.array([[r[2] for r in records]], dtype=np.uint16),
        "full_path": cells([f"{i:02d}/nm{r[0]:07d}_rm{i}_{r[1][0]}_{r[2]}.jpg"
                            for i, r in enumerate(records)]),
        "gender": np.array([[r[3] for r in records]]),
        "face_location": cells([np.array([r[6]], dtype=np.float64) for r in records]),
        "face_score": np.array([[r[4] for r in records]]),
        "second_face_score": np.array([[r[5] for r in records]]),
        "name": cells([NAMES[r[0] - 1] for r in records]),
        "celeb_id": np.array([[r[0] for r in records]], dtype=np.float64),
        "celeb_names": np.array(NAMES, dtype=object).reshape(1, len(NAMES)),
    }
    for k, v in override.items():
        if v is None:
            del s[k]
        else:
            s[k] = v
    return s


def savemat(path, s):
    scipy.io.savemat(path, {"imdb": s}, do_compression=True, oned_as="row")


def main():
    shutil.rmtree(OUT, ignore_errors=True)
    os.makedirs(os.path.join(OUT, "expected"))
    os.makedirs(os.path.join(OUT, "corrupt"))
    s = struct(RECORDS)
    paths = list(s["full_path"][0])
    savemat(os.path.join(OUT, "imdb.mat"), s)
    for i, r in enumerate(RECORDS):
        if r[7] is None:
            continue
        p = os.path.join(OUT, paths[i])
        os.makedirs(os.path.dirname(p), exist_ok=True)
        Image.new("RGB", r[7], colour(i)).save(p, quality=90)

    kept = []
    for i, r in enumerate(RECORDS):
        gender, score, second = r[3], r[4], r[5]
        dob = datenum(r[1])
        if not (math.isfinite(score) and score >= MIN_SCORE):
            continue
        if not (math.isnan(second) or second <= MAX_SECOND):
            continue
        age = age_of(dob, r[2])
        if not 0 <= age <= 99 or gender not in (0.0, 1.0) or r[7] is None:
            continue
        kept.append((i, r, age, int(gender)))
    subjects = sorted({f"celeb_id:{r[0]}" for _, r, _, _ in kept})
    rng = MT19937_64(SEED)
    for i in range(len(subjects) - 1, 0, -1):
        j = rng() % (i + 1)
        subjects[i], subjects[j] = subjects[j], subjects[i]
    n_test = min(max(int(math.floor(TEST_FRACTION * len(subjects) + 0.5)), 1), len(subjects) - 1)
    test = set(subjects[:n_test])
    lists = {"train": "", "test": ""}
    crops = "index\tsplit\tsubject\tage\tgender\tx0\ty0\tx1\ty1\tsource\n"
    colors = ""
    for i, r, age, gender in kept:
        subject = f"celeb_id:{r[0]}"
        split = "test" if subject in test else "train"
        lists[split] += f"faces/{i:07d}.png {age} {gender}\n"
        c = crop(r[6], *r[7])
        crops += f"{i}\t{split}\t{subject}\t{age}\t{gender}\t" + "\t".join(map(str, c))
        crops += f"\t{paths[i]}\n"
        colors += f"{i}\t" + "\t".join(map(str, colour(i))) + "\n"
    for name, text in [("train.txt", lists["train"]), ("test.txt", lists["test"]),
                       ("crops.tsv", crops), ("colors.tsv", colors)]:
        with open(os.path.join(OUT, "expected", name), "w") as f:
            f.write(text)

    # wiki.mat's layout: no celeb_id (subjects by name); record 12 has an empty name.
    names = s["name"].copy()
    names[0, 12] = ""
    scipy.io.savemat(os.path.join(OUT, "wiki.mat"),
                     {"wiki": struct(RECORDS, celeb_id=None, celeb_names=None, name=names)},
                     do_compression=True, oned_as="row")

    # Corrupt variants: (file, substring of the error).
    errors = []
    raw = open(os.path.join(OUT, "imdb.mat"), "rb").read()
    with open(os.path.join(OUT, "corrupt", "truncated.mat"), "wb") as f:
        f.write(raw[: len(raw) // 2])
    errors.append(("truncated.mat", "truncated.mat'"))
    with open(os.path.join(OUT, "corrupt", "text.mat"), "w") as f:
        f.write("this is not a MAT-file\n" * 10)
    errors.append(("text.mat", "text.mat': not a MATLAB MAT-file"))
    savemat(os.path.join(OUT, "corrupt", "missing_field.mat"), struct(RECORDS, face_score=None))
    errors.append(("missing_field.mat", "field 'imdb.face_score': missing"))
    n = len(RECORDS)
    bad = np.array([f"{k}" for k in range(n)] + [None], dtype=object)[:-1].reshape(1, n)
    savemat(os.path.join(OUT, "corrupt", "wrong_type.mat"), struct(RECORDS, face_score=bad))
    errors.append(("wrong_type.mat", "field 'imdb.face_score': expected a real numeric row, got cell"))
    short = np.array([[1.0, 2.0]])
    savemat(os.path.join(OUT, "corrupt", "wrong_length.mat"), struct(RECORDS, gender=short))
    errors.append(("wrong_length.mat", "field 'imdb.gender': has 2 elements, expected"))
    boxes = s["face_location"].copy()
    boxes[0, 2] = np.array([[1.0, 2.0, 3.0]])
    savemat(os.path.join(OUT, "corrupt", "box_three.mat"), struct(RECORDS, face_location=boxes))
    errors.append(("box_three.mat", "record 2 field 'imdb.face_location': expected 4 numbers"))
    boxes = s["face_location"].copy()
    boxes[0, 5] = np.array([[100.0, 100.0, 120.0, 120.0]])
    savemat(os.path.join(OUT, "corrupt", "box_outside.mat"), struct(RECORDS, face_location=boxes))
    errors.append(("box_outside.mat", "record 5 field 'imdb.face_location': [100 100 120 120]"))
    fp = s["full_path"].copy()
    fp[0, 0] = "../escape.jpg"
    savemat(os.path.join(OUT, "corrupt", "traversal.mat"), struct(RECORDS, full_path=fp))
    errors.append(("traversal.mat", "record 0 field 'imdb.full_path': expected a relative path"))
    # A truncated JPEG for record 8 (the .mat points at it; the images are those of ../).
    fp = s["full_path"].copy()
    fp[0, 8] = "corrupt/truncated.jpg"
    jpeg = open(os.path.join(OUT, paths[8]), "rb").read()
    with open(os.path.join(OUT, "corrupt", "truncated.jpg"), "wb") as f:
        f.write(jpeg[: jpeg.index(b"\xff\xda") + 40])  # cut inside the scan data
    savemat(os.path.join(OUT, "corrupt", "bad_jpeg.mat"), struct(RECORDS, full_path=fp))
    errors.append(("bad_jpeg.mat", "record 8 field 'imdb.full_path': '\t"
                   "corrupt/truncated.jpg': corrupt or truncated JPEG"))
    with open(os.path.join(OUT, "corrupt", "expected_errors.tsv"), "w") as f:
        f.writelines(f"{a}\t{b}\n" for a, b in errors)


if __name__ == "__main__":
    main()
