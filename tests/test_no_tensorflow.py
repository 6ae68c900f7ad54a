"""Training and evaluation on prepared data need neither TensorFlow nor SeqIO (accelerator images often lack them).

A fresh interpreter imports the train and eval entry points, tokenises with the vocabulary, writes metrics and
TensorBoard events, sets up TensorFlow's deferred import and takes a work directory's lease; none of it may load
TensorFlow or SeqIO. (The input pipelines are checked where they are built.)
"""

import subprocess
import sys
import textwrap

from helpers import REPO

CODE = textwrap.dedent(
    """
    import sys
    import xlmp_jax.trainer, xlmp_jax.train, xlmp_jax.evaluate, xlmp_jax.metrics
    from data_pipelines.vocab import SAMPLE_VOCAB_PATH, XLMRVocabulary
    from xlmp_jax import console, lease
    from xlmp_jax.metrics import MetricsWriter

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
