"""Export to / import from transformers, the PyTorch wrapper and load_pretrained, against torch 2.13 CPU.

Reference: transformers' own XLMRobertaForMaskedLM / XLMRobertaTokenizer loading our export directory.
"""

import dataclasses
import functools
import json
import logging
import os
import subprocess
import sys
import warnings

import flax.linen as nn
import jax
import numpy as np
import pytest
import torch
import transformers
from helpers import REPO, random_params
from hf_reference import SENTENCES, hf_config, our_config, pad_rows

from xlmp_jax import export as export_cli
from xlmp_jax.hf import layout, load, names, writer
from xlmp_jax.hf.encoder import default_layer
from xlmp_jax.hf.load import load_pretrained
from xlmp_jax.model.model_config import ModelConfig
from xlmp_jax.model.prompt_pool import OLD_POOL_OPTIONS, PoolConfig
from xlmp_jax.model.xlmp import XLMP, init_params
from xlmp_jax.training import checkpoint, checkpoint_read
from xlmp_torch import XLMPForMaskedLM

# Real text in many scripts (plus digits, punctuation, accents, odd whitespace), for the tokenizer check.
MORE_SENTENCES = [
    "Η γρήγορη καφέ αλεπού πηδά πάνω από το τεμπέλικο σκυλί.",
    "השועל החום המהיר קופץ מעל הכלב העצלן.",
    "สุนัขจิ้งจอกสีน้ำตาลกระโดดข้ามสุนัขขี้เกียจ",
    "빠른 갈색 여우가 게으른 개를 뛰어넘는다.",
    "素早い茶色の狐がのろまな犬を飛び越える。",
    "Le cœur déçu mais l'âme plutôt naïve, Louÿs rêva de crapaüter en canoë.",
    "Pchnąć w tę łódź jeża lub ośm skrzyń fig.",
    "Nechť již hříšné saxofony ďáblů rozezvučí síň úděsnými tóny waltzu.",
    "Hızlı kahverengi tilki tembel köpeğin üzerinden atlar.",
    "দ্রুত বাদামী শিয়াল অলস কুকুরের উপর দিয়ে লাফ দেয়।",
    "வேகமான பழுப்பு நரி சோம்பேறி நாயின் மேல் குதிக்கிறது.",
    "Mbweha mwepesi wa kahawia anaruka juu ya mbwa mvivu.",
    "Price: $1,234.56 (≈ €1 100) — 50% off!!! email@example.com #tag 🦊🐶",
    "  leading and   repeated   spaces  ",
    "tab\tseparated\nlines\u00a0and\u3000ideographic space",
    "▁already ▁ escaped ▁",
    "ＦＵＬＬＷＩＤＴＨ ｶﾀｶﾅ ① ² ﬁ",
    "",
]


@pytest.fixture(scope="module")
def real_batch(sample_vocab):
    """A padded batch of real sentences in six scripts, tokenized with the shipped vocabulary."""
    ids, mask = pad_rows([sample_vocab.encode_with_specials(s) for s in SENTENCES], sample_vocab.pad_id)
    assert (mask == 0).any(), "the batch must be padded"
    return ids, mask


def _tiny_config(vocab_size, pool):
    return ModelConfig.preset("tiny", vocab_size=vocab_size, pool=pool, hidden_dropout=0.0, attention_dropout=0.0)


@functools.cache
def _apply_fn(config):
    return jax.jit(lambda p, ids, mask: XLMP(config).apply({"params": p}, ids, mask, output_hidden_states=True))


POOLS = {
    "soft": PoolConfig(size=8, length=3),
    "topk": PoolConfig(size=8, length=2, pooling="max", score="dot", retrieval="topk", top_k=3, temperature=10.0),
    # the clustering options: token-sized prompt init and the training-only terms (no torch forward change)
    "losses": PoolConfig(size=8, length=3, prompt_init_std=1.0, key_loss_weight=0.5, diversity_loss_weight=0.1),
}


@pytest.fixture(scope="module")
def exported(tmp_path_factory, sample_vocab):
    """Export directories of a baseline and of two pool variants, with the params that made them."""
    root = tmp_path_factory.mktemp("exports")
    out = {}
    for name, pool in [("baseline", None), *POOLS.items()]:
        config = _tiny_config(sample_vocab.vocab_size, pool)
        params = random_params(config)
        path = writer.export_params(config, params, str(root / name), sample_vocab.spm_model_path)
        out[name] = (config, params, path)
    return out


class _Capture(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def test_export_layout(exported, sample_vocab):
    config, params, path = exported["soft"]
    assert sorted(os.listdir(path)) == [
        "config.json",
        "model.safetensors",
        "prompt_pool.json",
        "prompt_pool.safetensors",
        "sentencepiece.bpe.model",
        "special_tokens_map.json",
        "tokenizer.json",
        "tokenizer_config.json",
    ]
    hf = json.load(open(os.path.join(path, "config.json")))
    assert hf["model_type"] == "xlm-roberta" and hf["architectures"] == ["XLMRobertaForMaskedLM"]
    assert (hf["vocab_size"], hf["hidden_size"], hf["num_hidden_layers"]) == (sample_vocab.vocab_size, 64, 2)
    pool = json.load(open(os.path.join(path, "prompt_pool.json")))
    assert pool == {"format": layout.POOL_FORMAT, "hidden_size": 64, **vars(POOLS["soft"])}
    from safetensors.numpy import load_file

    arrays = load_file(os.path.join(path, "prompt_pool.safetensors"))
    np.testing.assert_array_equal(arrays["keys"], params["pool"]["keys"])
    np.testing.assert_array_equal(arrays["prompts"], params["pool"]["prompts"])
    assert "prompt_pool.json" not in os.listdir(exported["baseline"][2])
    with open(os.path.join(path, "sentencepiece.bpe.model"), "rb") as f:
        assert f.read() == open(sample_vocab.spm_model_path, "rb").read()
    assert not [p for p in os.listdir(os.path.dirname(path)) if p.startswith(".")], "temporary directories left"


def test_transformers_loads_without_warnings(exported, sample_vocab):
    path = exported["soft"][2]
    capture = _Capture()
    logger = transformers.utils.logging.get_logger("transformers")
    logger.addHandler(capture)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model, info = transformers.AutoModelForMaskedLM.from_pretrained(path, output_loading_info=True)
            tokenizer = transformers.AutoTokenizer.from_pretrained(path)
    finally:
        logger.removeHandler(capture)
    assert type(model).__name__ == "XLMRobertaForMaskedLM"
    assert info == {"missing_keys": set(), "unexpected_keys": set(), "mismatched_keys": set(), "error_msgs": []}
    text = " ".join(capture.messages + [str(w.message) for w in caught]).lower()
    for word in ("missing", "unexpected", "newly initialized", "not used", "not initialized"):
        assert word not in text, text
    assert model.lm_head.decoder.weight.data_ptr() == model.roberta.embeddings.word_embeddings.weight.data_ptr()
    assert type(tokenizer).__name__ in ("XLMRobertaTokenizer", "XLMRobertaTokenizerFast")
    assert len(tokenizer) == sample_vocab.vocab_size
    specials = (tokenizer.bos_token_id, tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.unk_token_id)
    assert specials == (0, 1, 2, 3)
    assert tokenizer.mask_token_id == sample_vocab.mask_id == sample_vocab.vocab_size - 1


def test_tokenizer_ids_equal_ours(exported, sample_vocab, real_batch):
    tokenizer = transformers.AutoTokenizer.from_pretrained(exported["baseline"][2])
    for sentence in SENTENCES + MORE_SENTENCES:  # many scripts: exactly equal
        assert tokenizer(sentence)["input_ids"] == sample_vocab.encode_with_specials(sentence), sentence
    batch = tokenizer(SENTENCES, padding=True, return_tensors="np")
    np.testing.assert_array_equal(batch["input_ids"], real_batch[0])
    np.testing.assert_array_equal(batch["attention_mask"], real_batch[1])
    assert tokenizer.decode(real_batch[0][0], skip_special_tokens=True) == SENTENCES[0]


def test_tokenizer_agrees_on_the_whole_sample(exported, sample_vocab):
    """Every line of the 114-language sample. transformers 5's XLMRobertaTokenizer runs on the `tokenizers`
    library, which is not bit-exact with SentencePiece (upstream: huggingface/tokenizers#2116, #2334 -- its
    `Precompiled` normalizer decomposes some Kannada/Telugu vowel signs -- and Viterbi ties such as
    "...." = "." + "..." = "..." + "." broken differently): ~0.1 % of the lines differ, as for XLM-R's own files.
    """
    from data_pipelines import sample

    tokenizer = transformers.AutoTokenizer.from_pretrained(exported["baseline"][2])
    lines = []
    for lang in sample.languages():
        with open(sample.mono_path(lang), encoding="utf-8") as f:
            lines += [line.rstrip("\n") for line in f]
    assert len(lines) > 10_000
    theirs = tokenizer(lines)["input_ids"]
    same = sum(a == sample_vocab.encode_with_specials(s) for a, s in zip(theirs, lines, strict=True))
    assert same / len(lines) >= 0.998, f"{len(lines) - same} of {len(lines)} lines differ"


def _ours(config, params, ids, mask):
    """Our logits cut to transformers' vocabulary (the padding columns, checked masked, dropped)."""
    out = _apply_fn(config)(params, ids, mask)
    logits = np.asarray(out["logits"])
    assert logits.shape[-1] == config.padded_vocab_size > config.vocab_size
    assert (logits[..., config.vocab_size :] == np.finfo(np.float32).min).all()
    return logits[..., : config.vocab_size], out


def test_transformers_logits_match_ours(exported, real_batch):
    config, params, path = exported["baseline"]
    ids, mask = real_batch
    model = transformers.AutoModelForMaskedLM.from_pretrained(path).eval()
    with torch.no_grad():
        ref = model(input_ids=torch.from_numpy(ids).long(), attention_mask=torch.from_numpy(mask).long()).logits
    got, _ = _ours(config, params, ids, mask)
    assert got.shape == tuple(ref.shape) == (*ids.shape, config.vocab_size)
    assert np.abs(got - ref.numpy()).max() <= 1e-4
    wrapper = XLMPForMaskedLM.from_pretrained(path).eval()  # no pool file: the wrapper is plain XLM-R
    assert wrapper.pool is None
    with torch.no_grad():
        same = wrapper(torch.from_numpy(ids).long(), torch.from_numpy(mask).long())
    torch.testing.assert_close(same.logits, ref, rtol=0, atol=1e-6)
    assert same.pool_weights is None


@pytest.mark.parametrize("variant", sorted(POOLS))
def test_torch_wrapper_matches_ours(exported, real_batch, variant):
    config, params, path = exported[variant]
    ids, mask = real_batch
    model = XLMPForMaskedLM.from_pretrained(path).eval()
    assert model.pool is not None and model.pool.config.size == config.pool.size
    with torch.no_grad():
        ref = model(torch.from_numpy(ids).long(), torch.from_numpy(mask).long())
    got, out = _ours(config, params, ids, mask)
    assert got.shape == tuple(ref.logits.shape) == (*ids.shape, config.vocab_size)
    assert np.abs(got - ref.logits.numpy()).max() <= 1e-4
    weights = np.asarray(out["pool"]["weights"])
    np.testing.assert_allclose(ref.pool_weights.numpy(), weights, atol=1e-5)
    # the check means something: retrieval is far from uniform and differs between inputs
    assert weights.max() > 3 / config.pool.size
    assert np.abs(weights - weights[:1]).max() > 1e-2
    if config.pool.retrieval == "topk":
        assert ((weights > 0).sum(axis=1) == config.pool.top_k).all()
    # ...and the pool changes the logits (so the wrapper's pool path is exercised, not bypassed)
    baseline = transformers.AutoModelForMaskedLM.from_pretrained(path).eval()
    with torch.no_grad():
        plain = baseline(input_ids=torch.from_numpy(ids).long(), attention_mask=torch.from_numpy(mask).long()).logits
    assert np.abs(plain.numpy() - got).max() > 1e-2


def test_exported_pool_config_records_the_clustering_options(exported):
    config, _, path = exported["losses"]
    with open(os.path.join(path, "prompt_pool.json")) as f:
        saved = json.load(f)
    assert (saved["prompt_init_std"], saved["key_loss_weight"], saved["diversity_loss_weight"]) == (1.0, 0.5, 0.1)
    assert layout.read_exported_config(path).pool == config.pool
    torch_config = XLMPForMaskedLM.from_pretrained(path).pool.config  # training-only fields are not its concern
    assert not hasattr(torch_config, "key_loss_weight") and torch_config.pooling == config.pool.pooling


def test_an_export_without_the_pool_training_options_reads_back_their_old_values(tmp_path):
    # A prompt_pool.json written before the training options existed describes a pool trained without them
    # (no pool terms, prompts drawn like the keys): it reads back so (PoolConfig.from_saved), not at the defaults.
    config = _tiny_config(8002, PoolConfig(size=8, length=2, init_std=0.05))
    pool_json = layout.pool_config_dict(config)
    for name in OLD_POOL_OPTIONS:
        del pool_json[name]
    (tmp_path / "config.json").write_text(json.dumps(layout.hf_config_dict(config)))
    (tmp_path / layout.POOL_CONFIG_FILE).write_text(json.dumps(pool_json))
    old = dataclasses.replace(config.pool, key_loss_weight=0.0, diversity_loss_weight=0.0, prompt_init_std=0.05)
    assert layout.read_exported_config(str(tmp_path)).pool == old


def test_torch_pool_rejects_first_pooling():
    from xlmp_torch.modeling import PromptPoolConfig

    with pytest.raises(ValueError, match=r"pooling='first' is not supported: it gives every input the same query"):
        PromptPoolConfig.from_dict(
            {"format": layout.POOL_FORMAT, "size": 8, "length": 2, "hidden_size": 64, "pooling": "first"}
        )


def test_torch_wrapper_trains_and_round_trips(exported, real_batch, tmp_path):
    config, params, path = exported["soft"]
    ids, mask = (torch.from_numpy(x).long() for x in real_batch)
    model = XLMPForMaskedLM.from_pretrained(path)
    model.train()
    labels = torch.where(mask.bool(), ids, torch.full_like(ids, -100))
    out = model(ids, mask, labels=labels)
    out.loss.backward()
    assert model.pool.keys.grad is not None and model.pool.keys.grad.abs().sum() > 0
    assert model.pool.prompts.grad.abs().sum() > 0
    assert model.model.roberta.embeddings.word_embeddings.weight.grad.abs().sum() > 0
    model.save_pretrained(str(tmp_path))
    again = XLMPForMaskedLM.from_pretrained(str(tmp_path)).eval()
    with torch.no_grad():
        np.testing.assert_array_equal(again.pool.keys.numpy(), model.pool.keys.detach().numpy())


# -- import ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory, sample_vocab):
    torch.manual_seed(0)
    model = transformers.XLMRobertaForMaskedLM(hf_config(sample_vocab.vocab_size)).eval()
    path = tmp_path_factory.mktemp("hf_tiny")
    model.save_pretrained(str(path))
    return str(path), model


def test_import_logits_equal_transformers(hf_dir, real_batch):
    path, model = hf_dir
    config = our_config(model.config)
    params = load.load_hf_params(path, config, jax.random.key(0))
    ids, mask = real_batch
    with torch.no_grad():
        ref = model(input_ids=torch.from_numpy(ids).long(), attention_mask=torch.from_numpy(mask).long()).logits
    got, _ = _ours(config, params, ids, mask)
    assert np.abs(got - ref.numpy())[mask.astype(bool)].max() <= 1e-5
    assert np.abs(got - ref.numpy()).max() <= 1e-4


@pytest.mark.slow
def test_import_with_fresh_pool(hf_dir):
    path, model = hf_dir
    pool = PoolConfig(size=8, length=2)
    config = our_config(model.config, pool=pool)
    rng = jax.random.key(3)
    params = load.load_hf_params(path, config, rng)
    baseline = load.load_hf_params(path, our_config(model.config), rng)
    assert set(params) == set(baseline) | {"pool"}
    jax.tree.map(np.testing.assert_array_equal, {k: v for k, v in params.items() if k != "pool"}, baseline)
    fresh = nn.unbox(jax.jit(init_params, static_argnums=0)(config, rng))["params"]["pool"]
    np.testing.assert_array_equal(params["pool"]["keys"], np.asarray(fresh["keys"]))
    np.testing.assert_array_equal(params["pool"]["prompts"], np.asarray(fresh["prompts"]))
    state = {k: v.numpy() for k, v in model.state_dict().items()}
    vocab = config.vocab_size
    np.testing.assert_array_equal(
        params["embeddings"]["word_embeddings"][:vocab], state["roberta.embeddings.word_embeddings.weight"]
    )
    np.testing.assert_array_equal(params["lm_head"]["bias"][:vocab], state["lm_head.bias"])
    # the vocabulary padding is added as zeros, to the model's padded size
    assert params["embeddings"]["word_embeddings"].shape == (config.padded_vocab_size, config.hidden_size)
    assert params["lm_head"]["bias"].shape == (config.padded_vocab_size,) and vocab < config.padded_vocab_size
    assert not params["embeddings"]["word_embeddings"][vocab:].any() and not params["lm_head"]["bias"][vocab:].any()


def test_export_strips_and_import_re_adds_the_vocab_padding(exported, real_batch):
    """The export holds vocab_size rows (the padding of our params, non-zero here, is cut off); reading it
    back pads zeros, and the logits stay transformers' over the real vocabulary."""
    from safetensors.numpy import load_file

    config, params, path = exported["baseline"]
    vocab, padded = config.vocab_size, config.padded_vocab_size
    assert np.abs(params["embeddings"]["word_embeddings"][vocab:]).max() > 0  # padding rows not zero here
    state = load_file(os.path.join(path, "model.safetensors"))
    assert state["roberta.embeddings.word_embeddings.weight"].shape == (vocab, config.hidden_size)
    assert state["lm_head.bias"].shape == (vocab,)
    np.testing.assert_array_equal(
        state["roberta.embeddings.word_embeddings.weight"], params["embeddings"]["word_embeddings"][:vocab]
    )
    back = load.load_hf_encoder(path, config, None)
    assert back["embeddings"]["word_embeddings"].shape == (padded, config.hidden_size)
    np.testing.assert_array_equal(
        back["embeddings"]["word_embeddings"][:vocab], state["roberta.embeddings.word_embeddings.weight"]
    )
    assert not back["embeddings"]["word_embeddings"][vocab:].any() and not back["lm_head"]["bias"][vocab:].any()
    ids, mask = real_batch
    model = transformers.AutoModelForMaskedLM.from_pretrained(path).eval()
    with torch.no_grad():
        ref = model(input_ids=torch.from_numpy(ids).long(), attention_mask=torch.from_numpy(mask).long()).logits
    got, _ = _ours(config, back, ids, mask)
    assert got.shape == tuple(ref.shape)
    assert np.abs(got - ref.numpy()).max() <= 1e-4
    np.testing.assert_array_equal(got, _ours(config, params, ids, mask)[0])  # padding rows never mattered


def test_import_rejects_other_architectures(hf_dir, tmp_path, sample_vocab):
    path, model = hf_dir
    config = our_config(model.config)
    bert = tmp_path / "bert"
    transformers.BertConfig(vocab_size=sample_vocab.vocab_size, hidden_size=32).save_pretrained(str(bert))
    with pytest.raises(ValueError, match=rf"{bert}.*model_type='bert'"):
        load.load_hf_params(str(bert), config, jax.random.key(0))
    wider = dataclasses.replace(config, hidden_size=64)
    with pytest.raises(ValueError, match=rf"{path}.*hidden_size=32.*model\.hidden_size=64"):
        load.load_hf_params(path, wider, jax.random.key(0))
    deeper = dataclasses.replace(config, num_layers=3)
    with pytest.raises(ValueError, match=r"num_hidden_layers=2.*model\.num_layers=3"):
        load.load_hf_params(path, deeper, jax.random.key(0))
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load.load_hf_params(str(tmp_path / "nowhere"), config, jax.random.key(0))
    with pytest.raises(FileNotFoundError, match="no config.json"):
        load.load_hf_params(str(tmp_path), config, jax.random.key(0))


# -- checkpoints: export CLI, load_pretrained, errors ---------------------------------------------


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, sample_vocab):
    """A work directory with checkpoints at steps 1 and 2, written by xlmp_jax.training.checkpoint."""
    sys.path.insert(0, str(REPO))
    from configs import tiny

    run_config = tiny.get_config()
    run_config.model.pool.size = 8
    run_config.model.pool.length = 3
    run_config.data.vocab_path = sample_vocab.spm_model_path
    run_config.model.vocab_size = sample_vocab.vocab_size
    config = ModelConfig.from_dict(run_config.model)
    path = str(tmp_path_factory.mktemp("run"))
    saver = checkpoint.Checkpointer(path, keep=3, async_save=False)
    params = {}
    for step in (1, 2):
        params[step] = random_params(config, seed=step)
        saver.save(step, {"params": params[step], "step": np.int32(step)}, config=run_config)
    saver.close()
    return path, run_config, config, params


@pytest.mark.slow
def test_export_cli_end_to_end(workdir, real_batch, tmp_path, capsys):
    path, _, config, params = workdir
    out = tmp_path / "out"
    env = dict(os.environ, JAX_PLATFORMS="cpu", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", XLA_FLAGS="")
    cmd = [sys.executable, "-m", "xlmp_jax.export", f"--workdir={path}", "--step=1", f"--out={out}"]
    result = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    model = XLMPForMaskedLM.from_pretrained(str(out)).eval()
    ids, mask = real_batch
    with torch.no_grad():
        ref = model(torch.from_numpy(ids).long(), torch.from_numpy(mask).long()).logits.numpy()
    got, _ = _ours(config, params[1], ids, mask)
    assert np.abs(got - ref).max() <= 1e-4
    # the same CLI in-process: a non-empty OUT is refused, naming it; --overwrite replaces it
    assert export_cli.main([f"--workdir={path}", f"--out={out}"]) == 1
    assert f"{out}" in capsys.readouterr().err
    (out / "stale.txt").write_text("old")
    assert export_cli.main([f"--workdir={path}", f"--out={out}", "--overwrite"]) == 0
    assert not (out / "stale.txt").exists()  # the latest step (2) replaced the old export
    keys = XLMPForMaskedLM.from_pretrained(str(out)).pool.keys.detach().numpy()
    np.testing.assert_array_equal(keys, params[2]["pool"]["keys"])
    assert export_cli.main([f"--workdir={path}", "--step=9", f"--out={tmp_path / 'other'}"]) == 1
    assert "step 9 not in" in capsys.readouterr().err


def test_export_errors_name_the_value(workdir, tmp_path, sample_vocab):
    path, _, config, params = workdir
    empty = tmp_path / "empty_run"
    (empty / "checkpoints").mkdir(parents=True)
    with pytest.raises(checkpoint_read.CheckpointError, match=f"no checkpoint in {empty}"):
        writer.export(str(empty), str(tmp_path / "o1"))
    with pytest.raises(checkpoint_read.CheckpointError, match=r"step 7 not in .*have: \[1, 2\]"):
        writer.export(path, str(tmp_path / "o2"), step=7)
    with pytest.raises(FileNotFoundError, match="does_not_exist"):
        writer.export(str(tmp_path / "does_not_exist"), str(tmp_path / "o3"))
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("x")
    with pytest.raises(FileExistsError, match=rf"{busy}.*not empty"):
        writer.export(path, str(busy))
    with pytest.raises(FileExistsError, match=rf"{busy}.*not empty"):
        writer.export_params(config, params[1], str(busy), sample_vocab.spm_model_path)
    assert os.listdir(busy) == ["keep.txt"]
    with pytest.raises(FileNotFoundError, match="missing.model"):
        writer.export_params(config, params[1], str(tmp_path / "o4"), str(tmp_path / "missing.model"))
    assert not (tmp_path / "o4").exists() and not [p for p in os.listdir(tmp_path) if p.startswith(".")]


def test_load_pretrained_logits_and_encode(workdir, real_batch, sample_vocab):
    path, run_config, config, params = workdir
    model = load_pretrained(path, batch_size=4)
    assert model.step == 2 and model.config == config and model.run_config.model.pool.size == 8
    assert model.tokenizer == sample_vocab
    jax.tree.map(np.testing.assert_array_equal, model.params, params[2])
    ids, mask = real_batch  # 6 rows in batches of 4: exercises the batching and the padded last batch
    logits = model.logits(ids, mask)
    assert logits.shape == (*ids.shape, config.vocab_size) and logits.dtype == np.float32
    ref, out = _ours(config, params[2], ids, mask)
    np.testing.assert_allclose(logits, ref, atol=1e-5)
    np.testing.assert_array_equal(model.tokenize(SENTENCES)[0], ids)

    vectors = model.encode(SENTENCES)
    assert vectors.shape == (len(SENTENCES), config.hidden_size) and default_layer(config) == 1
    hidden = out["all_hidden_states"]
    for layer, vecs in [(1, vectors), (-1, model.encode(SENTENCES, layer=-1)), (0, model.encode(SENTENCES, layer=0))]:
        h = np.asarray(hidden[layer])
        manual = (h * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)
        np.testing.assert_allclose(vecs, manual, atol=1e-5)
    assert not np.allclose(model.encode(SENTENCES, layer=2), vectors)
    with pytest.raises(ValueError, match="layer=3"):
        model.encode(SENTENCES, layer=3)
    assert model.encode([]).shape == (0, config.hidden_size)

    older = load_pretrained(os.path.join(path, "checkpoints", "1"))
    assert older.step == 1
    np.testing.assert_allclose(older.logits(ids, mask), _ours(config, params[1], ids, mask)[0], atol=1e-5)


def test_load_pretrained_from_export_dir(exported, real_batch):
    config, params, path = exported["soft"]
    model = load_pretrained(path)
    assert model.config == config and model.step is None
    ids, mask = real_batch
    np.testing.assert_allclose(model.logits(ids, mask), _ours(config, params, ids, mask)[0], atol=1e-5)
    with pytest.raises(FileNotFoundError, match="no_such_run"):
        load_pretrained(os.path.join(path, "no_such_run"))


def test_hf_state_dict_keys_are_transformers(exported):
    """The safetensors file holds exactly transformers' saved keys: the tied decoder is not duplicated."""
    from safetensors import safe_open

    config, _, path = exported["baseline"]
    with safe_open(os.path.join(path, "model.safetensors"), "np") as f:
        keys = set(f.keys())
    with torch.device("meta"):
        reference = transformers.XLMRobertaForMaskedLM(transformers.AutoConfig.from_pretrained(path))
    assert keys == set(reference.state_dict()) - set(names.TIED_HF_KEYS)
