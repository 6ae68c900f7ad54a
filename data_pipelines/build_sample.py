"""Builds the shipped sample corpus `data_pipelines/sample/` from translated message catalogs in Debian packages.

A build tool, not used at run time or in tests. It downloads the `.deb` files named in `PACKAGES` with
`apt-get download` (Debian's own client; run `apt-get update` first), unpacks them with `dpkg -x`, reads every
gettext catalog (`usr/share/locale/<locale>/LC_MESSAGES/*.mo`) and writes:

- `mono/<lang>.txt`: human translations (msgstr) of each language, cleaned, one line each, deduplicated and
  shuffled with a fixed seed (so the last 10 % validation split mixes all catalogs); `mono/en.txt` holds the
  English source strings (msgid).
- `parallel/en-<lang>.tsv`: `English<TAB>translation` for single-line messages that read as sentences.
- `PROVENANCE.md`: for every file, the packages (and versions, licences) its lines came from.

Rerun with more packages or larger caps to enlarge the sample:
    python -m data_pipelines.build_sample --cache=/tmp/xlmp_debs [--max_mono_chars=N] [--max_pairs=N]

Why one file of ~450 lines: it is one job, a build tool run by hand (never imported at run time or in
tests), and its parts (script detection, .mo parsing, line cleaning, package download, writing) are steps of
that one build, each used only by it; split, a reader would follow one run across five files.
"""

from __future__ import annotations

import argparse
import collections
import functools
import glob
import html
import os
import random
import re
import struct
import subprocess
import sys
import unicodedata
from dataclasses import dataclass, field

HERE = os.path.dirname(os.path.abspath(__file__))

# Debian bookworm packages whose catalogs are read. Chosen for many languages and sentence-like messages
# (help texts, descriptions, error messages); name/label-only catalogs (iso-codes, xkb-data) are left out.
PACKAGES = [
    "adduser",
    "apt",
    "at-spi2-common",
    "bash",
    "binutils-common",
    "coreutils",
    "debconf-i18n",
    "diffutils",
    "dpkg",
    "e2fsprogs-l10n",
    "evolution-data-server-common",
    "findutils",
    "gedit-common",
    "gettext",
    "gettext-base",
    "gnome-control-center-data",
    "gnome-shell-common",
    "gnome-software-common",
    "gnupg-l10n",
    "grep",
    "gsettings-desktop-schemas",
    "libapt-pkg6.0",
    "libc-l10n",
    "libgdk-pixbuf2.0-common",
    "libglib2.0-data",
    "libgstreamer1.0-0",
    "libgtk-3-common",
    "libgtk2.0-common",
    "libpam-runtime",
    "login",
    "make",
    "man-db",
    "mc-data",
    "nautilus-data",
    "packagekit",
    "psmisc",
    "sed",
    "shared-mime-info",
    "systemd",
    "tar",
    "tasksel-data",
    "totem-common",
    "util-linux-locales",
    "vlc-l10n",
    "wget",
    "xz-utils",
]

# Paired with English in parallel/: many scripts, high- and low-resource (eu, cy, ka).
PARALLEL_LANGUAGES = "ar cy de el es eu fr he hi ja ka ko ru ta th tr vi zh".split()

# Locale directory -> language code of the sample. Locales not listed map to themselves when they are a bare
# language code; regional and script variants are skipped unless named here (their base language is kept).
LOCALE_TO_LANG = {"zh_CN": "zh", "pt_BR": "pt", "sr": "sr"}
SKIP_LOCALES = {"pt"}  # merged: European Portuguese catalogs are fewer; pt_BR supplies "pt" (one variant only)

# Scripts by the first word of a character's Unicode name; Han/kana/Hangul are grouped as writing systems.
SCRIPT_ALIASES = {"CJK": "HAN", "HIRAGANA": "KANA", "KATAKANA": "KANA", "HALFWIDTH": "KANA"}
# Writing systems a language's text may mix (Japanese: kana + Han, Korean: Hangul + occasional Han).
MIXED_SCRIPTS = {"ja": {"KANA", "HAN"}, "ko": {"HANGUL", "HAN"}}
NO_SPACE_SCRIPTS = {"HAN", "KANA", "THAI", "LAO", "KHMER", "MYANMAR", "TIBETAN"}


@functools.cache
def char_script(ch: str) -> str | None:
    """Script of a letter by its Unicode name ("LATIN", "CYRILLIC", "HAN", ...), or None for non-letters."""
    if not unicodedata.category(ch).startswith("L"):
        return None
    name = unicodedata.name(ch, "")
    if not name:
        return None
    first = name.split()[0]
    return SCRIPT_ALIASES.get(first, first)


def script_counts(text: str) -> collections.Counter:
    return collections.Counter(s for s in map(char_script, text) if s)


# ----- reading .mo catalogs ------------------------------------------------------------------------------------
def read_mo(path: str) -> list[tuple[str, str]]:
    """(msgid, msgstr) pairs of a compiled gettext catalog; first plural form, context dropped, header skipped."""
    with open(path, "rb") as f:
        data = f.read()
    magic = struct.unpack("<I", data[:4])[0]
    endian = "<" if magic == 0x950412DE else ">"
    if struct.unpack(endian + "I", data[:4])[0] != 0x950412DE:
        raise ValueError(f"not a gettext .mo file: {path!r}")
    _, n, orig_off, trans_off = struct.unpack(endian + "4I", data[4:20])
    raw = []
    for i in range(n):
        olen, ooff = struct.unpack(endian + "2I", data[orig_off + 8 * i : orig_off + 8 * i + 8])
        tlen, toff = struct.unpack(endian + "2I", data[trans_off + 8 * i : trans_off + 8 * i + 8])
        raw.append((data[ooff : ooff + olen], data[toff : toff + tlen]))
    charset = "utf-8"
    for msgid, msgstr in raw:
        if msgid == b"":
            m = re.search(rb"charset=([\w-]+)", msgstr)
            if m and m.group(1).lower() not in (b"charset", b""):
                charset = m.group(1).decode("ascii")
    pairs = []
    for msgid, msgstr in raw:
        if not msgid or not msgstr:
            continue
        msgid = msgid.split(b"\x04", 1)[-1].split(b"\x00")[0]
        msgstr = msgstr.split(b"\x00")[0]
        try:
            pairs.append((msgid.decode("utf-8"), msgstr.decode(charset)))
        except (UnicodeDecodeError, LookupError):
            continue
    return pairs


# ----- cleaning ------------------------------------------------------------------------------------------------
_PRINTF = re.compile(r"%(\d+\$)?[-+ #0']*(\d+|\*)?(\.(\d+|\*))?(hh|ll|[hlLqjzt]|I64|I32)?[diouxXeEfFgGaAcspSm]")
_PATTERNS = [
    re.compile(r"%<\w+>"),  # %<PRIu64>
    re.compile(r"%Z?[A-Za-z@]"),  # non-printf markers: binutils' %B/%P, VLC's %V, ...
    re.compile(r"%\(\w+\)[sdifr]"),  # %(name)s
    re.compile(r"%\{\w+\}"),
    re.compile(r"\$\{\w+\}|\{\w*\}|\{\{[^}]*\}\}"),  # ${var}, {0}, {}, {{var}}
    re.compile(r"<[^<>]{1,80}>"),  # markup tags
    re.compile(r"[(（]\s*[_&][A-Za-z0-9]\s*[)）]"),  # CJK-style accelerators "(_O)"
]
_ACCEL = re.compile(r"(?:(?<=^)|(?<=[\s(\"'«“„]))[_&](?=\w)")
_EMPTY_PAIRS = re.compile(r"(''|\"\"|‘’|“”|„“|«\s*»|‹\s*›|「」|『』|\(\s*\)|\[\s*\]|《》|“\s*”|”\s*”|`'|»\s*«)")
# "  -a, --all=WHEN   text" -> "text" (possessive groups: no catastrophic backtracking on long lines)
_OPTION_PREFIX = re.compile(r"^\s*(?:-{1,2}[\w-]++(?:=\S++)?+,?+ ?+)++\s{2,}")
_SPACE_BEFORE_PUNCT = re.compile(r"\s+([,.;:!?)])")


def clean_line(text: str) -> str:
    """A catalog line as plain text: format markers, markup, accelerators and trailing colons removed."""
    text = _OPTION_PREFIX.sub("", text)
    text = text.replace("%%", "%")
    text = _PRINTF.sub("", text)
    for pat in _PATTERNS:
        text = pat.sub("", text)
    text = html.unescape(text)
    text = _ACCEL.sub("", text)
    text = text.replace("\t", " ").replace("\u00a0", " ")
    for _ in range(2):
        text = _EMPTY_PAIRS.sub("", text)
    text = re.sub(r"\s+", " ", text).strip()
    text = _SPACE_BEFORE_PUNCT.sub(r"\1", text)
    text = re.sub(r"\s*[:：]$", "", text).strip()
    text = re.sub(r"^[\s,.;:\-–—*•]+", "", text).strip()
    return text


def is_good_line(text: str, lang: str, dominant: str | None) -> bool:
    """Sentence-like: enough words (or characters in scripts without spaces), mostly letters of the language."""
    if not text or "\ufffd" in text or any(unicodedata.category(c) in ("Cc", "Co", "Cs") for c in text):
        return False
    scripts = script_counts(text)
    letters = sum(scripts.values())
    nonspace = sum(1 for c in text if not c.isspace())
    if letters < 12 or letters < 0.6 * nonspace:
        return False
    if dominant is not None:
        allowed = MIXED_SCRIPTS.get(lang, {dominant})
        if sum(scripts[s] for s in allowed) < 0.6 * letters:
            return False
    no_space = dominant in NO_SPACE_SCRIPTS or lang in MIXED_SCRIPTS
    if not no_space and len(text.split()) < 4:
        return False
    if re.search(r"https?://|www\.|\w+\.\w{2,4}/|/\w+/|\\n|--\w|\$[\w({]|`", text):
        return False
    return True


# ----- packages ------------------------------------------------------------------------------------------------
@dataclass
class Package:
    name: str
    version: str
    root: str
    licences: list[str] = field(default_factory=list)


_LICENCE_TOKEN = re.compile(
    r"\b(L?GPL-?\d(?:\.\d)?\+?|AGPL-?\d\+?|GFDL[-\w.+]*|BSD-\d-clause|BSD[-\w]*|MIT|Expat|Apache-2\.0|MPL-?[\d.]+|"
    r"ISC|Zlib|public-domain|CC-BY[-\w.]*|CC0-1\.0|Unicode-DFS[-\w]*|X11|PSF[-\w.]*)\b",
    re.IGNORECASE,
)


_GNU_LICENCE = re.compile(
    r"GNU (Lesser |Library )?(General Public|Free Documentation) License[^.]{0,120}?version (\d(?:\.\d)?)"
)


def licences_of(root: str, name: str) -> list[str]:
    """Licence names from the package's debian/copyright (`License:` fields; else the GNU licence wording)."""
    doc = os.path.join(root, "usr/share/doc", name)
    if os.path.islink(doc):
        return [f"see debian/copyright of {os.readlink(doc)} (this package's doc directory links there)"]
    path = os.path.join(doc, "copyright")
    if not os.path.isfile(path):
        return ["see the package's debian/copyright"]
    text = open(path, encoding="utf-8", errors="replace").read()
    found = []
    for line in text.splitlines():
        if line.startswith("License:"):
            for tok in re.split(r"\s+(?:or|and)\s+|\s*,\s*|\s*\|\s*", line[len("License:") :].strip()):
                if tok and tok not in found and len(tok) < 40:
                    found.append(tok)
    if not found:
        flat = re.sub(r"\s+", " ", text)
        for m in _GNU_LICENCE.finditer(flat):
            kind = {"General Public": "GPL", "Free Documentation": "GFDL"}[m.group(2)]
            tok = ("L" if m.group(1) and kind == "GPL" else "") + f"{kind}-{m.group(3)}+"
            if tok not in found:
                found.append(tok)
        for m in _LICENCE_TOKEN.finditer(flat):
            if m.group(1) not in found:
                found.append(m.group(1))
    return found[:8] or ["see the package's debian/copyright"]


def fetch_packages(names: list[str], cache: str) -> list[Package]:
    """`apt-get download` + `dpkg -x` each package into `cache` (kept, so reruns are offline and fast)."""
    os.makedirs(cache, exist_ok=True)
    out = []
    for name in names:
        debs = sorted(glob.glob(os.path.join(cache, f"{name}_*.deb")))
        if not debs:
            subprocess.run(["apt-get", "download", name], cwd=cache, check=True, capture_output=True)
            debs = sorted(glob.glob(os.path.join(cache, f"{name}_*.deb")))
        if not debs:
            raise FileNotFoundError(f"apt-get download {name!r} left no .deb in {cache!r}")
        deb = debs[-1]
        version = subprocess.run(
            ["dpkg-deb", "-f", deb, "Version"], check=True, capture_output=True, text=True
        ).stdout.strip()
        root = os.path.join(cache, "root", name)
        if not os.path.isdir(root):
            os.makedirs(root + ".partial", exist_ok=True)
            subprocess.run(["dpkg", "-x", deb, root + ".partial"], check=True)
            os.rename(root + ".partial", root)
        out.append(Package(name, version, root, licences_of(root, name)))
    return out


def locale_to_lang(locale: str) -> str | None:
    if locale in LOCALE_TO_LANG:
        return LOCALE_TO_LANG[locale]
    if locale in SKIP_LOCALES or "@" in locale or "_" in locale or locale.startswith("en"):
        return None
    return locale if re.fullmatch(r"[a-z]{2,3}", locale) else None


# ----- build ---------------------------------------------------------------------------------------------------
def build(args: argparse.Namespace) -> None:
    packages = fetch_packages(PACKAGES, args.cache)
    # lang -> list of (package, msgid, msgstr), in a fixed order (packages sorted, catalogs sorted).
    messages: dict[str, list[tuple[str, str, str]]] = collections.defaultdict(list)
    for pkg in sorted(packages, key=lambda p: p.name):
        for mo in sorted(glob.glob(os.path.join(pkg.root, "usr/share/locale/*/LC_MESSAGES/*.mo"))):
            lang = locale_to_lang(mo.split(os.sep)[-3])
            if lang is None:
                continue
            for msgid, msgstr in read_mo(mo):
                if msgstr.strip() and msgstr.strip() != msgid.strip():
                    messages[lang].append((pkg.name, msgid, msgstr))
    by_name = {p.name: p for p in packages}

    # Dominant script per language, from (a fixed sample of) its translations.
    for lang, msgs in messages.items():
        random.Random(f"{args.seed}-messages-{lang}").shuffle(msgs)
    dominant = {
        lang: script_counts("".join(m[2] for m in msgs[:2000])).most_common(1) for lang, msgs in messages.items()
    }
    dominant = {lang: d[0][0] for lang, d in dominant.items() if d}

    mono: dict[str, list[tuple[str, str]]] = {}  # lang -> (package, line)
    english: list[tuple[str, str]] = []
    parallel: dict[str, list[tuple[str, str, str]]] = {}
    for lang in sorted(messages):
        lines, pairs, size = [], [], 0
        # Messages are shuffled: stop once there is ~2x what the caps keep (room for deduplication).
        for n, (pkg, msgid, msgstr) in enumerate(messages[lang]):
            if size > 2 * args.max_mono_chars and (len(pairs) > 2 * args.max_pairs or n > args.max_messages):
                break
            for raw in msgstr.split("\n"):
                line = clean_line(raw)
                if is_good_line(line, lang, dominant.get(lang)):
                    lines.append((pkg, line))
                    size += len(line) + 1
            en_lines, tr_lines = msgid.strip("\n").split("\n"), msgstr.strip("\n").split("\n")
            if len(en_lines) == 1 and len(tr_lines) == 1:
                en, tr = clean_line(en_lines[0]), clean_line(tr_lines[0])
                if en != tr and is_good_line(en, "en", "LATIN") and is_good_line(tr, lang, dominant.get(lang)):
                    if len(en.split()) >= 5 and "\t" not in en + tr:
                        pairs.append((pkg, en, tr))
        mono[lang] = dedupe(lines, key=lambda x: x[1])
        parallel[lang] = dedupe(pairs, key=lambda x: x[1])
        parallel[lang] = dedupe(parallel[lang], key=lambda x: x[2])
    sources = sorted({(pkg, msgid) for msgs in messages.values() for pkg, msgid, _ in msgs})
    random.Random(f"{args.seed}-messages-en").shuffle(sources)
    size = 0
    for pkg, msgid in sources:
        if size > 2 * args.max_mono_chars:
            break
        for raw in msgid.split("\n"):
            line = clean_line(raw)
            if is_good_line(line, "en", "LATIN"):
                english.append((pkg, line))
                size += len(line) + 1
    mono["en"] = dedupe(english, key=lambda x: x[1])

    out = args.out
    os.makedirs(os.path.join(out, "mono"), exist_ok=True)
    os.makedirs(os.path.join(out, "parallel"), exist_ok=True)
    for old in glob.glob(os.path.join(out, "mono", "*.txt")) + glob.glob(os.path.join(out, "parallel", "*.tsv")):
        os.remove(old)
    provenance: dict[str, collections.Counter] = {}
    kept_langs = []
    for lang in sorted(mono):
        lines = mono[lang]
        if len(lines) < args.min_mono_lines:
            continue
        random.Random(f"{args.seed}-mono-{lang}").shuffle(lines)
        chosen, size = [], 0
        for pkg, line in lines:
            size += len(line) + 1
            if size > args.max_mono_chars:
                break
            chosen.append((pkg, line))
        rel = f"mono/{lang}.txt"
        write_lines(os.path.join(out, rel), [line for _, line in chosen])
        provenance[rel] = collections.Counter(pkg for pkg, _ in chosen)
        kept_langs.append(lang)
    wanted = args.parallel_languages.split(",") if args.parallel_languages else sorted(parallel)
    ranked = [lang for lang in wanted if len(parallel.get(lang, ())) >= args.min_pairs]
    for lang in ranked:
        pairs = parallel[lang]
        random.Random(f"{args.seed}-parallel-{lang}").shuffle(pairs)
        chosen = pairs[: args.max_pairs]
        rel = f"parallel/en-{lang}.tsv"
        write_lines(os.path.join(out, rel), [f"{en}\t{tr}" for _, en, tr in chosen])
        provenance[rel] = collections.Counter(pkg for pkg, _, _ in chosen)
    write_provenance(os.path.join(out, "PROVENANCE.md"), provenance, by_name, dominant)
    total = sum(os.path.getsize(os.path.join(out, rel)) for rel in provenance)
    print(f"wrote {len(kept_langs)} mono languages, {len(ranked)} parallel sets, {total / 1e6:.2f} MB to {out}")


def dedupe(items: list, key) -> list:
    seen, out = set(), []
    for item in items:
        k = key(item).casefold()
        if k not in seen:
            seen.add(k)
            out.append(item)
    return out


def write_lines(path: str, lines: list[str]) -> None:
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for line in lines:
            f.write(line + "\n")


def write_provenance(path: str, provenance: dict, packages: dict[str, Package], dominant: dict[str, str]) -> None:
    lines = [
        "# Provenance of the sample corpus",
        "",
        "Every line is a human translation (or, in `mono/en.txt` and the English column of `parallel/`, the",
        "English source string) from gettext message catalogs (`usr/share/locale/*/LC_MESSAGES/*.mo`) in Debian 12",
        "(bookworm) packages, extracted by `python -m data_pipelines.build_sample` (which downloads the packages",
        "with `apt-get download`). Cleaning: format markers (`%s`, `{0}`, ...), markup, accelerators (`_`, `&`)",
        "and trailing colons removed; lines with fewer than 4 words (12 letters in scripts without spaces), mostly",
        "non-letters, or mostly in another script than the language's are dropped; duplicates dropped; lines",
        "shuffled with a fixed seed. The catalogs' translations are distributed under the licences of their",
        "packages, listed below from each package's `debian/copyright` (`License:` fields).",
        "",
        "## Packages",
        "",
        "| package | version | licences (debian/copyright) |",
        "| --- | --- | --- |",
    ]
    used = sorted({pkg for counts in provenance.values() for pkg in counts})
    for name in used:
        p = packages[name]
        lines.append(f"| {p.name} | {p.version} | {', '.join(p.licences)} |")
    lines += ["", "## Files", "", "| file | lines | script | source packages (lines) |", "| --- | --- | --- | --- |"]
    for rel in sorted(provenance):
        counts = provenance[rel]
        lang = rel.split("/")[-1].split(".")[0].removeprefix("en-")
        script = "LATIN" if lang == "en" else dominant.get(lang, "?")
        src = ", ".join(f"{pkg} ({n})" for pkg, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
        lines.append(f"| `{rel}` | {sum(counts.values())} | {script.title()} | {src} |")
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=os.path.join(HERE, "sample"))
    parser.add_argument("--cache", default="/tmp/xlmp_sample_debs", help="where .deb files are downloaded/unpacked")
    parser.add_argument("--max_mono_chars", type=int, default=16_000, help="per language (characters)")
    parser.add_argument("--min_mono_lines", type=int, default=150)
    parser.add_argument("--parallel_languages", default=",".join(PARALLEL_LANGUAGES), help="'' = every language")
    parser.add_argument("--max_pairs", type=int, default=800)
    parser.add_argument("--min_pairs", type=int, default=300)
    parser.add_argument("--max_messages", type=int, default=40_000, help="per language, once mono is full")
    parser.add_argument("--seed", type=int, default=0)
    build(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
