"""Builds the shipped cross-lingual transfer task `data_pipelines/sample/transfer/` from the sample's Debian catalogs.

A build tool, run by hand, never imported at run time or in tests (tests call its pure steps on a fake
catalog). The task: which group of packages an interface string comes from. The label is shared by an English
source string (msgid) and its human translations (msgstr), so a classifier fine-tuned on English strings can
be tested on the translations of *other* English strings in every parallel-sample language.

It downloads the packages `build_sample` reads, at the versions the sample's PROVENANCE.md lists (`apt-get
download name=version`; when a version is gone, what apt gives, recorded in the output's PROVENANCE.md),
reads their catalogs with `build_sample.read_mo` and cleans every string with `build_sample.clean_line` and
`is_good_line`, as the sample's lines were. It keeps an English string when:

- it has one line and its cleaned form reads as a sentence (the sample's English rule);
- every catalog that holds it (any locale) belongs to one package: unambiguous;
- its package belongs to a group of `GROUPS` with enough strings, so the label is that group;
- it is translated (one line, a sentence in the language's script, not the English copied) in at least
  `--min_languages` of `build_sample.PARALLEL_LANGUAGES`.

Strings whose normalised forms coincide (`sample.normalize`) are one string. Each group is capped at
`--max_per_label` strings, chosen by a stable hash of the normalised English (not file order). Output:
`transfer/packages.tsv` (a header `label<TAB>en<TAB><lang>...`, then one English string per line with its
translations; an empty cell = not translated) and `transfer/PROVENANCE.md`. The splits are not written: they
are a hash of the English string, computed where the file is read (`sample.transfer_split`).

    python -m data_pipelines.build_transfer --cache=/tmp/xlmp_transfer_debs
"""

from __future__ import annotations

import argparse
import collections
import glob
import hashlib
import os
import re
import subprocess
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from data_pipelines import build_sample, sample

HERE = os.path.dirname(os.path.abspath(__file__))
TRANSFER_FILE = "packages.tsv"

# Package -> label: the sample's packages in a handful of coarse groups by what the software does (per-package
# labels are too fine: most packages hold a few dozen unambiguous, widely translated sentences). Our choice.
GROUPS: dict[str, str] = {
    **dict.fromkeys(
        [
            "at-spi2-common",
            "evolution-data-server-common",
            "gedit-common",
            "gnome-control-center-data",
            "gnome-shell-common",
            "gnome-software-common",
            "gsettings-desktop-schemas",
            "libgdk-pixbuf2.0-common",
            "libglib2.0-data",
            "libgtk-3-common",
            "libgtk2.0-common",
            "nautilus-data",
        ],
        "desktop",
    ),
    **dict.fromkeys(["vlc-l10n", "libgstreamer1.0-0", "totem-common"], "media"),
    **dict.fromkeys(
        ["apt", "libapt-pkg6.0", "dpkg", "debconf-i18n", "tasksel-data", "packagekit", "adduser"], "packaging"
    ),
    **dict.fromkeys(
        ["systemd", "util-linux-locales", "login", "libpam-runtime", "e2fsprogs-l10n", "libc-l10n", "psmisc"],
        "system",
    ),
    **dict.fromkeys(
        [
            "bash",
            "binutils-common",
            "coreutils",
            "diffutils",
            "findutils",
            "gettext",
            "gettext-base",
            "grep",
            "make",
            "man-db",
            "mc-data",
            "sed",
            "shared-mime-info",
            "tar",
            "wget",
            "xz-utils",
        ],
        "gnu-tools",
    ),
    "gnupg-l10n": "crypto",
}


# ----- packages at the sample's versions ------------------------------------------------------------------------
def pinned_versions(provenance: str) -> dict[str, str]:
    """Package -> version from the sample PROVENANCE.md's package table (`| name | version | licences |`)."""
    found = {}
    with open(provenance, encoding="utf-8") as f:
        for line in f:
            m = re.match(r"^\| ([a-z0-9][a-z0-9.+-]*) \| (\S+) \| ", line)
            if m and m.group(1) != "package":
                found[m.group(1)] = m.group(2)
    return found


def _deb_version(deb: str) -> str:
    return subprocess.run(["dpkg-deb", "-f", deb, "Version"], check=True, capture_output=True, text=True).stdout.strip()


def _cached_deb(cache: str, name: str, version: str) -> str | None:
    """A downloaded .deb of `name` at `version` (any version when `version` is empty), or None."""
    debs = sorted(glob.glob(os.path.join(cache, f"{name}_*.deb")))
    if not version:
        return debs[-1] if debs else None
    return next((d for d in debs if _deb_version(d) == version), None)


def fetch_pinned(names: Iterable[str], versions: Mapping[str, str], cache: str) -> list[build_sample.Package]:
    """Each package at its pinned version (`apt-get download name=version`), else apt's own version; unpacked
    with `dpkg -x` under `cache` (kept, so reruns are offline)."""
    os.makedirs(cache, exist_ok=True)
    out = []
    for name in names:
        want = versions.get(name, "")
        deb = _cached_deb(cache, name, want)
        if deb is None and want:
            got = subprocess.run(["apt-get", "download", f"{name}={want}"], cwd=cache, capture_output=True)
            deb = _cached_deb(cache, name, want) if got.returncode == 0 else None
        if deb is None:
            subprocess.run(["apt-get", "download", name], cwd=cache, check=True, capture_output=True)
            deb = sorted(glob.glob(os.path.join(cache, f"{name}_*.deb")))[-1]
        version = _deb_version(deb)
        root = os.path.join(cache, "root", f"{name}_{version}".replace(":", "%3a"))
        if not os.path.isdir(root):
            os.makedirs(root + ".partial", exist_ok=True)
            subprocess.run(["dpkg", "-x", deb, root + ".partial"], check=True)
            os.rename(root + ".partial", root)
        out.append(build_sample.Package(name, version, root, build_sample.licences_of(root, name)))
    return out


# ----- collecting labelled strings ------------------------------------------------------------------------------
@dataclass
class Source:
    """One English string across the catalogs: where it occurs and its cleaned translations per language."""

    english: str
    packages: set[str] = field(default_factory=set)
    translations: dict[str, collections.Counter] = field(default_factory=dict)


def catalogs(root: str) -> list[tuple[str, str]]:
    """(locale, .mo path) of a package's unpacked tree, sorted."""
    paths = sorted(glob.glob(os.path.join(root, "usr/share/locale/*/LC_MESSAGES/*.mo")))
    return [(p.split(os.sep)[-3], p) for p in paths]


def single_line(text: str) -> str | None:
    """The cleaned text of a one-line catalog string, None for a multi-line one."""
    lines = text.strip("\n").split("\n")
    return build_sample.clean_line(lines[0]) if len(lines) == 1 else None


def collect(
    messages: Iterable[tuple[str, str, str, str]], languages: Iterable[str], dominant: Mapping[str, str]
) -> dict[str, Source]:
    """normalised English -> `Source`, from (package, locale, msgid, msgstr) in a fixed order.

    Every msgid counts towards the packages that hold it (any locale, even a translation dropped here); only
    sentence-like one-line translations into `languages` are kept."""
    wanted = set(languages)
    found: dict[str, Source] = {}
    english: dict[str, str | None] = {}  # msgid -> its normalised key (None: not a sentence); each cleaned once
    for package, locale, msgid, msgstr in messages:
        if msgid not in english:
            en = single_line(msgid)
            english[msgid] = sample.normalize(en) if en and build_sample.is_good_line(en, "en", "LATIN") else None
            if english[msgid] is not None:
                found.setdefault(english[msgid], Source(en))
        key = english[msgid]
        if key is None:
            continue
        src = found[key]
        src.packages.add(package)
        lang = build_sample.locale_to_lang(locale)
        if lang not in wanted:
            continue
        tr = single_line(msgstr)
        if not tr or "\t" in tr or sample.normalize(tr) == key:
            continue
        if build_sample.is_good_line(tr, lang, dominant.get(lang)):
            src.translations.setdefault(lang, collections.Counter())[tr] += 1
    return found


def stable_rank(key: str) -> int:
    """A salted hash of a normalised English string: the order in which capped groups keep strings."""
    return int.from_bytes(hashlib.sha1(f"transfer-cap|{key}".encode()).digest()[:8], "big")


@dataclass(frozen=True)
class Item:
    label: str
    english: str
    translations: dict[str, str]


def select(
    sources: Mapping[str, Source],
    groups: Mapping[str, str],
    languages: list[str],
    min_languages: int,
    max_per_label: int,
    min_per_label: int,
) -> list[Item]:
    """The task's strings: unambiguous (one package), grouped, translated in >= `min_languages`; each label
    capped at `max_per_label` (by `stable_rank`), labels with fewer than `min_per_label` dropped. Sorted by
    label, then English. A language's translation is its most frequent one (ties: the first in sorted order)."""
    by_label: dict[str, list[tuple[int, Item]]] = collections.defaultdict(list)
    for key, src in sources.items():
        if len(src.packages) != 1:
            continue
        label = groups.get(next(iter(src.packages)))
        if label is None or sum(lang in src.translations for lang in languages) < min_languages:
            continue
        chosen = {
            lang: sorted(src.translations[lang].items(), key=lambda kv: (-kv[1], kv[0]))[0][0]
            for lang in languages
            if lang in src.translations
        }
        by_label[label].append((stable_rank(key), Item(label, src.english, chosen)))
    items = []
    for ranked in by_label.values():
        if len(ranked) < min_per_label:
            continue
        items += [item for _, item in sorted(ranked, key=lambda x: x[0])[:max_per_label]]
    return sorted(items, key=lambda it: (it.label, it.english))


def tsv_lines(items: list[Item], languages: list[str]) -> list[str]:
    """The task file: a header, then `label<TAB>English<TAB>translation...` (empty = not translated)."""
    lines = ["\t".join(["label", "en", *languages])]
    for it in items:
        lines.append("\t".join([it.label, it.english, *(it.translations.get(lang, "") for lang in languages)]))
    return lines


# ----- build ---------------------------------------------------------------------------------------------------
def read_messages(packages: list[build_sample.Package]) -> list[tuple[str, str, str, str]]:
    """(package, locale, msgid, msgstr) of every catalog, packages and catalogs in sorted order."""
    out = []
    for pkg in sorted(packages, key=lambda p: p.name):
        for locale, path in catalogs(pkg.root):
            out += [(pkg.name, locale, msgid, msgstr) for msgid, msgstr in build_sample.read_mo(path)]
    return out


def dominant_scripts(messages: list[tuple[str, str, str, str]], languages: list[str]) -> dict[str, str]:
    """Each language's most frequent script over its translations (not over msgids copied untranslated)."""
    counts: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for _, locale, msgid, msgstr in messages:
        lang = build_sample.locale_to_lang(locale)
        if lang in languages and msgstr.strip() != msgid.strip():  # an English copy says nothing of the script
            counts[lang].update(build_sample.script_counts(msgstr))
    return {lang: c.most_common(1)[0][0] for lang, c in counts.items() if c}


def write_provenance(path: str, items: list[Item], packages: list[build_sample.Package], args, pinned) -> None:
    labels = collections.Counter(it.label for it in items)
    lines = [
        "# Provenance of the transfer task",
        "",
        f"`{TRANSFER_FILE}` was written by `python -m data_pipelines.build_transfer` from the gettext catalogs of",
        "the Debian 12 (bookworm) packages of the sample (`../PROVENANCE.md`). A line is one English source string",
        "(msgid), its label (the group of the one package whose catalogs hold it; `GROUPS` in the builder) and its",
        "human translations (msgstr), cleaned as the sample's lines. Kept: one-line strings that read as sentences,",
        f"held by one package only, translated in at least {args.min_languages} of the "
        f"{len(build_sample.PARALLEL_LANGUAGES)} languages;",
        f"at most {args.max_per_label} per label (stable hash of the normalised English), labels with fewer than",
        f"{args.min_per_label} dropped. Splits (`sample.transfer_split`): a stable hash of the normalised English.",
        "",
        "## Labels",
        "",
        "| label | strings | packages |",
        "| --- | --- | --- |",
    ]
    for label in sorted(labels):
        members = ", ".join(sorted(p for p, g in GROUPS.items() if g == label))
        lines.append(f"| {label} | {labels[label]} | {members} |")
    lines += ["", "## Translations per language", "", "| language | strings |", "| --- | --- |"]
    for lang in build_sample.PARALLEL_LANGUAGES:
        lines.append(f"| {lang} | {sum(lang in it.translations for it in items)} |")
    lines += ["", "## Packages", "", "| package | version | licences (debian/copyright) |", "| --- | --- | --- |"]
    for p in sorted(packages, key=lambda p: p.name):
        note = "" if pinned.get(p.name) == p.version else f" (the sample used {pinned.get(p.name, '?')})"
        lines.append(f"| {p.name} | {p.version}{note} | {', '.join(p.licences)} |")
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")


def build(args: argparse.Namespace) -> None:
    languages = list(build_sample.PARALLEL_LANGUAGES)
    pinned = pinned_versions(os.path.join(args.sample, "PROVENANCE.md"))
    packages = fetch_pinned(build_sample.PACKAGES, pinned, args.cache)
    messages = read_messages(packages)
    sources = collect(messages, languages, dominant_scripts(messages, languages))
    items = select(sources, GROUPS, languages, args.min_languages, args.max_per_label, args.min_per_label)
    out = os.path.join(args.sample, "transfer")
    os.makedirs(out, exist_ok=True)
    build_sample.write_lines(os.path.join(out, TRANSFER_FILE), tsv_lines(items, languages))
    write_provenance(os.path.join(out, "PROVENANCE.md"), items, packages, args, pinned)
    counts = collections.Counter(it.label for it in items)
    print(f"wrote {len(items)} strings to {out}: {dict(sorted(counts.items()))}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sample", default=os.path.join(HERE, "sample"), help="the sample folder (read, then written)")
    parser.add_argument("--cache", default="/tmp/xlmp_transfer_debs", help="where .deb files are downloaded/unpacked")
    parser.add_argument("--min_languages", type=int, default=10, help="of the parallel languages (a majority)")
    parser.add_argument("--max_per_label", type=int, default=300)
    parser.add_argument("--min_per_label", type=int, default=100)
    build(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
