"""Training and evaluation on prepared data need neither TensorFlow nor SeqIO (accelerator images often lack them).

A fresh interpreter imports the train and eval entry points, tokenises with the vocabulary, writes metrics and
TensorBoard events, sets up TensorFlow's deferred import and takes a work directory's lease; none of it may load
TensorFlow or SeqIO. (The input pipelines are checked where they are built.)
"""

import os
import subprocess
import sys
import textwrap

import pytest
from helpers import REPO

CODE = textwrap.dedent(
    """
    import sys
    import xlmp_jax.training.trainer, xlmp_jax.train, xlmp_jax.evaluate, xlmp_jax.training.metrics
    from data_pipelines.vocab import SAMPLE_VOCAB_PATH, XLMRVocabulary
    from xlmp_jax.runtime import console, lease
    from xlmp_jax.training.metrics import MetricsWriter

    workdir = sys.argv[1]
    vocab = XLMRVocabulary(SAMPLE_VOCAB_PATH)
    ids = vocab.encode_with_specials("Hello world, bonjour le monde.")
    assert ids[0] == vocab.bos_id and ids[-1] == vocab.eos_id and vocab.decode(ids) == "Hello world, bonjour le monde."
    writer = MetricsWriter(workdir, active=True)
    for step in (1, 2, 3):
        writer.write(step, {"loss": 5.0 / step, "mlm_accuracy": 0.1 * step}, {"top_prompts": {"en": [[0, 0.5]]}})
    writer.close()
    console.hide_gpus_from_tensorflow_on_import()
    with lease.hold_workdir(workdir):
        pass
    print(sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "seqio", "tensorflow_datasets")))
    """
)


def test_train_and_eval_modules_import_neither_tensorflow_nor_seqio(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-c", CODE, str(tmp_path)], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-5000:]
    assert proc.stdout.strip() == "[]", proc.stdout
    assert (tmp_path / "metrics.jsonl").read_text().count("\n") == 3
    assert list((tmp_path / "tb").glob("events.out.tfevents.*"))


RUN = textwrap.dedent(
    """
    import sys
    from xlmp_jax import config_utils
    from xlmp_jax.training import trainer

    prepared, workdir = sys.argv[1], sys.argv[2]
    config = config_utils.load_config("configs/tiny.py")
    config.data.prepared_dir = prepared
    config.data.languages = ("en", "de", "ru")
    config.train.update(steps=4, warmup_steps=1, eval_every=2, eval_batches=1, log_every=2, checkpoint_every=4, pool_report=False)
    trainer.train(config, workdir)
    print(sorted({m.split(".")[0] for m in sys.modules} & {"tensorflow", "seqio", "tensorflow_datasets", "apache_beam"}))
    """
)


@pytest.mark.slow
def test_a_run_from_prepared_shards_imports_neither_tensorflow_nor_seqio(tmp_path):
    """Prepare with the CLI (Beam, TensorFlow allowed there), then train and evaluate in a fresh interpreter."""
    prepared = tmp_path / "prepared"
    cmd = [sys.executable, "-m", "data_pipelines.prepare", "--config=configs/tiny.py", f"--out={prepared}",
           "--config.data.languages=('en','de','ru')"]  # fmt: skip
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-5000:]
    assert (prepared / "manifest.json").exists() and "prepared 3 language entries" in proc.stdout
    proc = subprocess.run(
        [sys.executable, "-c", RUN, str(prepared), str(tmp_path / "work")], cwd=REPO, capture_output=True,
        text=True, timeout=600, env={**os.environ, "JAX_PLATFORMS": "cpu"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-5000:]
    assert proc.stdout.strip().splitlines()[-1] == "[]", proc.stdout[-2000:]
    assert "step 4" in proc.stdout and "eval/loss" in proc.stdout, proc.stdout[-2000:]
