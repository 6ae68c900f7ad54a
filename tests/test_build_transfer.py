"""The transfer-task builder's steps on fake catalogs (no network, no apt): parsing, cleaning, labelling, the
unambiguity and coverage rules, the cap and the file it writes."""

import struct

from data_pipelines import build_sample, build_transfer, sample


def write_mo(path, pairs: list[tuple[str, str]]) -> None:
    """A little-endian gettext .mo file holding a header entry and ``pairs`` (msgid, msgstr), sorted."""
    entries = sorted([("", "Content-Type: text/plain; charset=UTF-8\n"), *pairs])
    ids = [m.encode() for m, _ in entries]
    strs = [s.encode() for _, s in entries]
    n = len(entries)
    orig_off, trans_off = 28, 28 + 8 * n
    data_off = trans_off + 8 * n
    table_o, table_t, blob = b"", b"", b""
    for raw in ids:
        table_o += struct.pack("<2I", len(raw), data_off + len(blob))
        blob += raw + b"\0"
    for raw in strs:
        table_t += struct.pack("<2I", len(raw), data_off + len(blob))
        blob += raw + b"\0"
    header = struct.pack("<7I", 0x950412DE, 0, n, orig_off, trans_off, 0, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(header + table_o + table_t + blob)


OPEN = "Could not open the file %s for reading"
QUIT = "Quit the media player and close every window"
SHARED = "Print the version number and exit now"


def fake_packages(tmp_path) -> list[build_sample.Package]:
    """Two packages: vlc-l10n (media) holds OPEN, QUIT and SHARED, coreutils (gnu-tools) holds SHARED too."""
    vlc, core = tmp_path / "vlc", tmp_path / "core"
    de = {OPEN: "Die Datei %s konnte nicht zum Lesen geöffnet werden", QUIT: "Medienspieler beenden und alle Fenster"}
    write_mo(vlc / "usr/share/locale/de/LC_MESSAGES/vlc.mo", [*de.items(), (SHARED, "Version ausgeben und beenden")])
    fr = [(OPEN, "Impossible d'ouvrir le fichier %s en lecture"), (QUIT, QUIT)]  # QUIT left in English
    write_mo(vlc / "usr/share/locale/fr/LC_MESSAGES/vlc.mo", fr)
    write_mo(vlc / "usr/share/locale/ru/LC_MESSAGES/vlc.mo", [(OPEN, "Не удалось открыть файл %s для чтения")])
    write_mo(core / "usr/share/locale/sv/LC_MESSAGES/coreutils.mo", [(SHARED, "Skriv ut versionsnummer och avsluta")])
    return [build_sample.Package("vlc-l10n", "1", str(vlc)), build_sample.Package("coreutils", "2", str(core))]


def test_read_mo_round_trips_the_fake_catalog(tmp_path):
    path = tmp_path / "x.mo"
    write_mo(path, [("Hello there", "Hallo da")])
    assert build_sample.read_mo(str(path)) == [("Hello there", "Hallo da")]


def test_collect_cleans_labels_and_keeps_unambiguous_strings(tmp_path):
    messages = build_transfer.read_messages(fake_packages(tmp_path))
    langs = ["de", "fr", "ru"]
    dominant = build_transfer.dominant_scripts(messages, langs)
    assert dominant == {"de": "LATIN", "fr": "LATIN", "ru": "CYRILLIC"}
    sources = build_transfer.collect(messages, langs, dominant)
    opened = sources[sample.normalize("Could not open the file for reading")]
    assert opened.english == "Could not open the file for reading"  # cleaned as the sample's lines
    assert opened.packages == {"vlc-l10n"}
    assert set(opened.translations) == {"de", "fr", "ru"}
    assert "Die Datei konnte nicht zum Lesen geöffnet werden" in opened.translations["de"]
    quit_ = sources[sample.normalize(QUIT)]
    assert set(quit_.translations) == {"de"}  # the English copy in fr is no translation
    assert sources[sample.normalize(SHARED)].packages == {"vlc-l10n", "coreutils"}  # sv counts for ambiguity

    items = build_transfer.select(sources, build_transfer.GROUPS, langs, 2, 10, 1)
    assert [(it.label, it.english, sorted(it.translations)) for it in items] == [
        ("media", "Could not open the file for reading", ["de", "fr", "ru"])
    ]  # QUIT: one language; SHARED: two packages
    lines = build_transfer.tsv_lines(items, langs)
    assert lines[0] == "label\ten\tde\tfr\tru" and lines[1].split("\t")[:2] == ["media", opened.english]
    assert len(lines[1].split("\t")) == 5


def test_select_caps_each_label_by_a_stable_hash_and_drops_small_labels():
    def source(text, package):
        return build_transfer.Source(text, {package}, {"de": {f"de {text}": 1}})

    sources = {f"s{i} words here now": source(f"S{i} words here now", "vlc-l10n") for i in range(10)}
    sources["one tar string here"] = source("One tar string here", "tar")
    picked = build_transfer.select(sources, build_transfer.GROUPS, ["de"], 1, 4, 2)
    assert {it.label for it in picked} == {"media"} and len(picked) == 4  # tar's label has 1 < 2 strings
    again = build_transfer.select(dict(reversed(list(sources.items()))), build_transfer.GROUPS, ["de"], 1, 4, 2)
    assert again == picked  # the cap does not depend on order


def test_every_sample_package_has_a_group_and_pins_parse(tmp_path):
    assert set(build_sample.PACKAGES) <= set(build_transfer.GROUPS)
    prov = tmp_path / "PROVENANCE.md"
    prov.write_text(
        "| package | version | licences |\n| --- | --- | --- |\n| apt | 2.6.2 | GPL-2+ |\n| diffutils | 1:3.8-4 | x |\n"
    )
    assert build_transfer.pinned_versions(str(prov)) == {"apt": "2.6.2", "diffutils": "1:3.8-4"}
