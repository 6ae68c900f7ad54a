"""tf.data preprocessing for XLM-P: text lines -> XLM-R token rows (MLM) / sentence pairs (TLM) -> BERT masking.

All of it is pure TensorFlow (no `py_function`), so a pipeline built from it can be saved and restored with
`tf.train.Checkpoint(iterator=...)` and runs in parallel inside tf.data.

Line stream convention (every source is turned into it): one element per line, `{"text": bytes}`, and an
empty line marks a document boundary (CC-100's layout). Rows are built as fairseq builds XLM-R's
(`TokenBlockDataset`, break mode "complete"): each line gets `</s>` appended, complete lines are
concatenated while they fit in `seq_length - 1` tokens, and `<s>` is prepended. A line longer than that is
split into consecutive rows (counted in `stat_split`); undecodable lines are skipped (counted in `stat_bad`).
Counters travel with the rows so that nothing is lost or truncated silently, and the input pipeline sums them.
"""

from __future__ import annotations

import functools

import tensorflow as tf

AUTOTUNE = tf.data.AUTOTUNE
STAT_KEYS = ("stat_lines", "stat_bad", "stat_split", "stat_truncated")
# Wiki-40B's structure markers (replaced by line breaks; titles stay as their own lines).
_WIKI40B_MARKERS = r"_START_ARTICLE_|_START_SECTION_|_START_PARAGRAPH_|_NEWLINE_"


def _valid_utf8(text: tf.Tensor) -> tf.Tensor:
    """True where `text` is valid UTF-8 (dropping invalid bytes changes nothing)."""
    return tf.equal(tf.strings.unicode_transcode(text, "UTF-8", "UTF-8", errors="ignore"), text)


def documents_to_lines(ds: tf.data.Dataset, text_key: str = "text", wiki40b: bool = False) -> tf.data.Dataset:
    """Documents (`{text_key: doc}`) -> the line stream: the document's lines, then an empty boundary line."""

    def split(ex):
        text = ex[text_key]
        if wiki40b:
            text = tf.strings.regex_replace(text, _WIKI40B_MARKERS, "\n")
        lines = tf.strings.split(text, "\n")
        lines = tf.boolean_mask(lines, tf.strings.length(tf.strings.strip(lines)) > 0)
        return tf.data.Dataset.from_tensor_slices({"text": tf.concat([lines, [""]], 0)})

    return ds.flat_map(split)


def _tokenize_batch(lines: tf.Tensor, vocab) -> dict[str, tf.Tensor]:
    ok = _valid_utf8(lines)
    stripped = tf.strings.strip(lines)
    boundary = tf.logical_and(ok, tf.equal(tf.strings.length(stripped), 0))
    ids = vocab.encode_tf(tf.where(ok, stripped, ""))
    return {"ids": ids, "bad": tf.cast(tf.logical_not(ok), tf.int32), "boundary": boundary}


def tokenize_lines(ds: tf.data.Dataset, vocab, chunk: int = 256) -> tf.data.Dataset:
    """Line stream -> `{ids: int32[n] (no specials), bad: 0/1, boundary: bool}`; batched for SentencePiece speed."""
    tok = functools.partial(_tokenize_batch, vocab=vocab)
    return ds.map(lambda ex: ex["text"]).batch(chunk).map(tok, num_parallel_calls=AUTOTUNE).unbatch()


def _check_mode(mode: str) -> None:
    if mode not in ("complete", "complete_doc", "none"):
        raise ValueError(f"data.packing={mode!r}: expected complete, complete_doc or none")


def _pack_block(ex: dict, *, width: int, eos_id: int, mode: str, language: int) -> dict[str, tf.Tensor]:
    """One block of tokenized lines (`ids` ragged [B, None], `bad`, `boundary` [B]) -> its rows [R, width].

    Lines get `</s>` and are cut into chunks of at most `width`; a loop over the chunk lengths (scalars only)
    assigns rows greedily; rows are then gathered in one vectorised step.
    """
    ids, bad, boundary = ex["ids"], ex["bad"], ex["boundary"]
    if isinstance(ids, tf.Tensor):
        ids = tf.RaggedTensor.from_tensor(ids)
    skip = tf.logical_or(boundary, bad > 0)
    num_lines = tf.shape(bad)[0]
    ids = tf.concat([ids, tf.RaggedTensor.from_tensor(tf.fill([num_lines, 1], tf.constant(eos_id, tf.int32)))], 1)
    values = tf.boolean_mask(ids.flat_values, tf.repeat(tf.logical_not(skip), ids.row_lengths()))
    n = tf.where(skip, 0, tf.cast(ids.row_lengths(), tf.int32))
    num = tf.maximum((n + width - 1) // width, 1)
    idx = tf.ragged.range(num)
    line = tf.cast(idx.value_rowids(), tf.int32)
    idx = tf.cast(idx.flat_values, tf.int32)
    length = tf.maximum(tf.minimum(width, tf.gather(n, line) - idx * width), 0)
    first = tf.equal(idx, 0)
    chunk_boundary = tf.logical_and(first, tf.gather(boundary, line))
    complete_doc, one_a_row = mode == "complete_doc", mode == "none"

    def assign(state, el):
        fill, row, pending = state
        k, brk_here = el
        brk = tf.logical_or(pending, tf.logical_and(complete_doc, brk_here))
        cut = tf.logical_or(fill + k > width, tf.logical_and(fill > 0, tf.logical_or(one_a_row, brk)))
        new_row = tf.logical_or(row < 0, tf.logical_and(k > 0, cut))
        row = row + tf.cast(new_row, tf.int32)
        fill = tf.where(new_row, k, fill + k)
        return fill, row, tf.logical_and(brk, k == 0)

    _, rid, _ = tf.scan(assign, (length, chunk_boundary), initializer=(0, -1, False))
    nrows = tf.reduce_max(rid) + 1
    rows = tf.RaggedTensor.from_value_rowids(values, tf.repeat(rid, length), nrows=nrows)
    firsti = tf.cast(first, tf.int32)
    stats = {
        "stat_lines": firsti * tf.cast(tf.gather(n, line) > 0, tf.int32),
        "stat_bad": firsti * tf.gather(bad, line),
        "stat_split": firsti * tf.cast(tf.gather(num, line) > 1, tf.int32),
        "stat_truncated": tf.zeros_like(length),
    }
    out = {
        "tokens": rows.to_tensor(default_value=0, shape=[None, width]),
        "length": tf.cast(rows.row_lengths(), tf.int32),
        "language": tf.fill([nrows], tf.constant(language, tf.int32)),
    }
    out.update({s: tf.math.unsorted_segment_sum(v, rid, nrows) for s, v in stats.items()})
    return out


def lines_to_rows(
    ds: tf.data.Dataset,
    vocab,
    *,
    seq_length: int,
    mode: str = "complete",
    language: int = 0,
    block: int | None = None,
) -> tf.data.Dataset:
    """The line stream -> rows of complete lines (`tokens` int32[seq_length - 1], `length`), XLM-R style.

    mode "complete": lines are concatenated across documents (fairseq's break mode "complete");
    "complete_doc": a row never crosses a document boundary; "none": one line a row. A line longer than a
    row is split over several rows (counted in `stat_split`). Work is done per block of `block` lines
    (default max(256, 2 * seq_length)): tokenised together, rows assigned by a loop over scalars, gathered
    at once. A row never crosses a block, so once per block a row may end early (more padding, no text lost).
    """
    _check_mode(mode)
    block = block or max(256, 2 * seq_length)
    pack = functools.partial(_pack_block, width=seq_length - 1, eos_id=vocab.eos_id, mode=mode, language=language)

    def fn(lines):
        return pack(_tokenize_batch(lines, vocab))

    ds = ds.map(lambda ex: ex["text"]).batch(block).map(fn, num_parallel_calls=AUTOTUNE)
    return ds.unbatch().filter(lambda ex: ex["length"] > 0)


def pack_lines(
    ds: tf.data.Dataset,
    *,
    seq_length: int,
    eos_id: int,
    mode: str = "complete",
    language: int = 0,
    block: int | None = None,
) -> tf.data.Dataset:
    """Like `lines_to_rows`, for a stream of already tokenized lines (`tokenize_lines`' output)."""
    _check_mode(mode)
    block = block or max(256, 2 * seq_length)
    pack = functools.partial(_pack_block, width=seq_length - 1, eos_id=eos_id, mode=mode, language=language)
    ds = ds.ragged_batch(block).map(pack, num_parallel_calls=AUTOTUNE)
    return ds.unbatch().filter(lambda ex: ex["length"] > 0)


def rows_to_features(ds: tf.data.Dataset, *, seq_length: int, bos_id: int, pad_id: int) -> tf.data.Dataset:
    """Packed rows -> fixed-length `input_ids` (`<s>` + tokens, padded) and XLM-R `positions`."""

    def fn(ex):
        n = ex["length"] + 1
        ids = tf.concat([tf.cast([bos_id], tf.int32), ex["tokens"]], 0)
        live = tf.range(seq_length) < n
        out = {
            "input_ids": tf.where(live, ids, pad_id),
            "positions": tf.where(live, tf.range(seq_length, dtype=tf.int32) + pad_id + 1, pad_id),
            "language": ex["language"],
        }
        out.update({s: ex[s] for s in STAT_KEYS})
        return out

    return ds.map(fn, num_parallel_calls=AUTOTUNE)


def tlm_pairs(ds: tf.data.Dataset, vocab, *, seq_length: int, language: int = 0, chunk: int = 256) -> tf.data.Dataset:
    """`{src, tgt}` sentence pairs -> TLM rows `<s> src </s></s> tgt </s>`, positions restarting at the target.

    A pair that does not fit is cut to fit (the longer side first; counted in `stat_truncated`);
    undecodable pairs are skipped (counted in `stat_bad` of the next row).
    """
    bos, eos, pad = vocab.bos_id, vocab.eos_id, vocab.pad_id
    budget = seq_length - 4

    def tok(ex):
        ok = tf.logical_and(_valid_utf8(ex["src"]), _valid_utf8(ex["tgt"]))
        src = vocab.encode_tf(tf.where(ok, tf.strings.strip(ex["src"]), ""))
        tgt = vocab.encode_tf(tf.where(ok, tf.strings.strip(ex["tgt"]), ""))
        bad = tf.cast(tf.logical_not(ok), tf.int32)
        if "malformed" in ex:
            bad = tf.maximum(bad, ex["malformed"])
        return {"src": src, "tgt": tgt, "bad": bad}

    ds = ds.batch(chunk).map(tok, num_parallel_calls=AUTOTUNE).unbatch()

    def carry_bad(bad_so_far, ex):
        empty = tf.logical_or(tf.size(ex["src"]) == 0, tf.size(ex["tgt"]) == 0)
        total = bad_so_far + ex["bad"]
        return tf.where(empty, total, 0), dict(ex, bad=total, keep=tf.logical_not(empty))

    ds = ds.scan(tf.constant(0), carry_bad).filter(lambda ex: ex["keep"])

    def build(ex):
        src, tgt = ex["src"], ex["tgt"]
        ns, nt = tf.shape(src)[0], tf.shape(tgt)[0]
        # Give each side what it needs up to half the budget, and the other side's unused half.
        half = budget // 2
        ks = tf.minimum(ns, tf.maximum(half, budget - nt))
        kt = tf.minimum(nt, budget - ks)
        ids = tf.concat([[bos], src[:ks], [eos, eos], tgt[:kt], [eos]], 0)
        pos_src = tf.range(ks + 2, dtype=tf.int32) + pad + 1
        pos_tgt = tf.range(kt + 2, dtype=tf.int32) + pad + 1
        positions = tf.concat([pos_src, pos_tgt], 0)
        n = tf.shape(ids)[0]
        return {
            "input_ids": tf.ensure_shape(tf.pad(ids, [[0, seq_length - n]], constant_values=pad), [seq_length]),
            "positions": tf.ensure_shape(tf.pad(positions, [[0, seq_length - n]], constant_values=pad), [seq_length]),
            "language": tf.constant(language, tf.int32),
            "stat_lines": tf.constant(1),
            "stat_bad": ex["bad"],
            "stat_split": tf.constant(0),
            "stat_truncated": tf.cast(ks + kt < ns + nt, tf.int32),
        }

    return ds.map(build, num_parallel_calls=AUTOTUNE)


def word_start_table(vocab) -> tf.Tensor:
    """bool[vocab_size]: id begins a word (its piece starts with U+2581) or is special."""
    starts = []
    for i in range(vocab.vocab_size):
        piece = vocab.id_to_piece(i)
        starts.append(piece.startswith("\u2581") or i in vocab.special_ids or i == vocab.unk_id)
    return tf.constant(starts, tf.bool)


def mask_tokens(
    input_ids: tf.Tensor,
    seed: tf.Tensor,
    *,
    vocab_size: int,
    mask_id: int,
    special_ids: tuple[int, ...],
    mlm_rate: float,
    max_predictions: int,
    mask_prob: float = 0.8,
    random_prob: float = 0.1,
    word_starts: tf.Tensor | None = None,
) -> dict[str, tf.Tensor]:
    """BERT / XLM-R masking of a batch of rows `[b, T]` (or one row `[T]`), deterministic in `seed` (int[2]).

    Per row: selects k = min(max_predictions, max(1, round(n * mlm_rate))) of its n non-special tokens uniformly
    (with `word_starts`: whole words in random order while they fit in k, so k or a little fewer); of those,
    `mask_prob` become `<mask>`, `random_prob` a random real piece, the rest stay. `targets` holds the
    original id and `weights` 1.0 at **every** selected position (also the unchanged ones). Vectorised over
    the batch: one call per batch, not per row.
    """
    single = input_ids.shape.rank == 1
    ids = input_ids[None] if single else input_ids
    seq_length = ids.shape[-1]
    shape = tf.shape(ids)
    s_select, s_action, s_random = tf.unstack(tf.random.experimental.stateless_split(seed, 3))
    candidate = tf.ones_like(ids, tf.bool)
    for sid in special_ids:
        candidate = tf.logical_and(candidate, tf.not_equal(ids, sid))
    n = tf.reduce_sum(tf.cast(candidate, tf.int32), -1, keepdims=True)
    k = tf.minimum(max_predictions, tf.maximum(1, tf.cast(tf.round(tf.cast(n, tf.float32) * mlm_rate), tf.int32)))
    k = tf.where(n > 0, k, 0)
    pos = tf.broadcast_to(tf.range(seq_length), shape)
    if word_starts is None:
        scores = tf.where(candidate, tf.random.stateless_uniform(shape, s_select), 2.0)  # non-candidates last
        rank = tf.argsort(tf.argsort(scores, axis=-1, stable=True), axis=-1, stable=True)
        selected = tf.logical_and(candidate, rank < k)
    else:
        # A word = a word-start candidate and the non-start candidates after it.
        start = tf.logical_or(tf.gather(word_starts, ids), tf.logical_not(candidate))
        word = tf.cumsum(tf.cast(start, tf.int32), axis=-1) - 1  # word index of each position, per row
        word_rank = tf.argsort(tf.argsort(tf.random.stateless_uniform(shape, s_select), axis=-1), axis=-1)
        key = tf.where(candidate, tf.gather(word_rank, word, batch_dims=1) * seq_length + pos, seq_length**2)
        order = tf.argsort(key, axis=-1, stable=True)  # words contiguous, in random order; non-candidates last
        sorted_word = tf.gather(word, order, batch_dims=1)
        sorted_cand = tf.gather(candidate, order, batch_dims=1)
        cum = tf.cumsum(tf.cast(sorted_cand, tf.int32), axis=-1)
        # The last cumulative count inside each word: the word fits iff its end stays within k.
        rows = shape[0]
        flat_word = sorted_word + tf.range(rows)[:, None] * seq_length
        word_end = tf.math.unsorted_segment_max(cum, flat_word, rows * seq_length)
        fits = tf.logical_and(sorted_cand, tf.gather(word_end, flat_word) <= k)
        selected = tf.gather(fits, tf.argsort(order, axis=-1), batch_dims=1)
    action = tf.random.stateless_uniform(shape, s_action)
    # Real pieces only: ids 4 .. vocab_size - 2 (not <s>, <pad>, </s>, <unk>, <mask>).
    random_ids = tf.random.stateless_uniform(shape, s_random, minval=4, maxval=vocab_size - 1, dtype=tf.int32)
    replaced = tf.where(action < mask_prob, mask_id, tf.where(action < mask_prob + random_prob, random_ids, ids))
    out = {
        "input_ids": tf.where(selected, replaced, ids),
        "targets": tf.where(selected, ids, 0),
        "weights": tf.cast(selected, tf.float32),
    }
    return {key_: v[0] for key_, v in out.items()} if single else out
