"""Launchers: exact dry-run commands (TPU / SLURM / multi-node), preflight errors, and a local rehearsal.

Nothing remote is ever run here: the TPU, SLURM and ssh launchers are only called with --dry-run and
their printed commands are parsed back (shlex) and compared. The rehearsal runs a real 2-process
training through launch/local.py on CPU devices, then relaunches it to check that it resumes.
"""

from __future__ import annotations

import io
import json
import os
import re
import shlex
import subprocess
import sys

import pytest

from launch import accelerators, local, multinode, preflight, slurm, tpu
from launch.command_line import REPO_ROOT, LaunchError, split_overrides

TINY = str(REPO_ROOT / "configs" / "tiny.py")
AWKWARD_WORKDIR = 'gs://my bucket/it\'s a "run" $HOME'  # spaces, both quotes, a $ the remote shell must not expand


def commands(text: str) -> list[list[str]]:
    """Dry-run output -> argv lists (comment lines skipped; a quoted argument may span lines)."""
    out, buf = [], ""
    for line in text.splitlines():
        if not buf and (not line.strip() or line.startswith("#")):
            continue
        buf = f"{buf}\n{line}" if buf else line
        try:
            out.append(shlex.split(buf))
            buf = ""
        except ValueError:  # an open quote: the command goes on on the next line
            continue
    assert not buf, f"unterminated command in dry-run output: {buf!r}"
    return out


def run_main(main, argv, capsys) -> tuple[int, str, str]:
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def remote_lines(cmd: list[str]) -> list[str]:
    """The script that ``gcloud ... ssh --command=SCRIPT`` runs, as lines."""
    (arg,) = [a for a in cmd if a.startswith("--command=")]
    return arg.removeprefix("--command=").splitlines()


# ----------------------------------------------------------------------------------------------------------------
# accelerator table


@pytest.mark.parametrize(
    "accel, slices, devices, hosts",
    [
        ("v4-8", 1, 4, 1),
        ("v4-32", 1, 16, 4),
        ("v5p-16", 1, 8, 2),
        ("v5p-16", 2, 16, 4),
        ("v5litepod-8", 1, 8, 1),
        ("v5litepod-16", 1, 16, 4),
        ("v6e-256", 1, 256, 64),
        ("v3-32", 1, 32, 4),
    ],
)
def test_tpu_device_counts(accel, slices, devices, hosts):
    a = accelerators.tpu_accelerator(accel, slices)
    assert (a.num_devices, a.num_hosts, a.num_processes, a.num_slices) == (devices, hosts, hosts, slices)


@pytest.mark.parametrize("bad", ["v4-12", "v6e-12", "v7-8", "tpu", "v5p"])
def test_tpu_unknown_types_name_the_value(bad):
    with pytest.raises(preflight.PreflightError, match=bad):
        accelerators.tpu_accelerator(bad)


def test_gpu_processes_per_gpu_or_node():
    per_gpu = accelerators.gpu_accelerator(2, 8, "gpu")
    per_node = accelerators.gpu_accelerator(2, 8, "node")
    assert (per_gpu.num_devices, per_gpu.num_processes) == (16, 16)
    assert (per_node.num_devices, per_node.num_processes, per_node.devices_per_process) == (16, 2, 8)


# ----------------------------------------------------------------------------------------------------------------
# TPU dry runs

TPU_ARGS = ["--name=xlmp-pod", "--zone=us-central2-b", "--project=my-proj"]


def test_tpu_up_dry_run_v4_32(capsys):
    code, out, err = run_main(
        tpu.main,
        ["up", *TPU_ARGS, "--accelerator_type=v4-32", "--spot", f"--config={TINY}", f"--workdir={AWKWARD_WORKDIR}"]
        + ["--config.train.steps=100", "--dry-run"],
        capsys,
    )
    assert code == 0, err
    assert "preflight ok: mesh on v4-32 (16 devices, 4 processes)" in out
    cmds = commands(out)
    loc = ["--zone=us-central2-b", "--project=my-proj"]
    assert cmds[0] == ["gcloud", "compute", "tpus", "tpu-vm", "describe", "xlmp-pod", *loc, "--format=value(state)"]
    assert cmds[1] == [
        "gcloud", "compute", "tpus", "tpu-vm", "create", "xlmp-pod", *loc,
        "--accelerator-type=v4-32", "--version=tpu-ubuntu2204-base", "--spot",
    ]  # fmt: skip
    assert cmds[2][:3] == ["tar", "-czf", "/tmp/xlmp-xlmp-pod.tar.gz"] and cmds[2][-3:] == ["-C", str(REPO_ROOT), "."]
    assert "--exclude=./.venv" in cmds[2]
    assert cmds[3] == [
        "gcloud", "compute", "tpus", "tpu-vm", "scp", "/tmp/xlmp-xlmp-pod.tar.gz", "xlmp-pod:xlmp.tar.gz", *loc,
        "--worker=all",
    ]  # fmt: skip
    install, start, logs = cmds[4], cmds[5], cmds[6]
    assert len(cmds) == 7
    for c in (install, start):
        assert c[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "xlmp-pod"] and "--worker=all" in c
    assert any("pip install --quiet -r requirements.txt -e . 'jax[tpu]==" in line for line in remote_lines(install))
    # The remote shell parses the nohup line once more: the workdir must come out byte for byte.
    (nohup,) = [line for line in remote_lines(start) if line.startswith("nohup ")]
    argv = shlex.split(nohup.split(" >> ")[0])
    assert argv == [
        "nohup", ".venv/bin/python", "-m", "xlmp_jax.train", "--config=configs/tiny.py",
        f"--workdir={AWKWARD_WORKDIR}", "--config.train.steps=100",
    ]  # fmt: skip
    assert '>> "$HOME"/xlmp-logs/train.log 2>&1 < /dev/null &' in nohup
    assert logs[-2:] == ["--worker=0", '--command=tail -n +1 -F "$HOME"/xlmp-logs/train.log']


def test_tpu_multislice_queued_resource(capsys):
    base = ["up", *TPU_ARGS, "--accelerator_type=v5p-16", "--num_slices=2", "--reserved", f"--config={TINY}"]
    base += ["--workdir=gs://b/run", "--dry-run", "--no_stream"]
    code, _, err = run_main(tpu.main, base, capsys)
    assert code == 2 and "mesh.dcn_data=1 but the job has 2 slices" in err and "--config.mesh.dcn_data=2" in err
    code, out, err = run_main(tpu.main, [*base, "--config.mesh.dcn_data=2"], capsys)
    assert code == 0, err
    assert "dcn_data=2 x data=8" in out
    cmds = commands(out)
    loc = ["--zone=us-central2-b", "--project=my-proj"]
    assert cmds[0][3:5] == ["queued-resources", "describe"]
    assert cmds[1] == [
        "gcloud", "compute", "tpus", "queued-resources", "create", "xlmp-pod", "--node-count=2",
        "--node-prefix=xlmp-pod", *loc, "--accelerator-type=v5p-16", "--runtime-version=v2-alpha-tpuv5", "--reserved",
    ]  # fmt: skip
    ssh_nodes = [c[5] for c in cmds if c[3:5] == ["tpu-vm", "ssh"]]
    scp_nodes = [c[6].split(":")[0] for c in cmds if c[3:5] == ["tpu-vm", "scp"]]
    assert ssh_nodes == ["xlmp-pod-0", "xlmp-pod-1", "xlmp-pod-0", "xlmp-pod-1"]  # install x2, start x2
    assert scp_nodes == ["xlmp-pod-0", "xlmp-pod-1"]


def test_tpu_stop_and_delete(capsys):
    code, out, _ = run_main(tpu.main, ["stop", *TPU_ARGS, "--dry-run"], capsys)
    (stop,) = commands(out)
    assert code == 0 and stop[:7] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "xlmp-pod", "--zone=us-central2-b"]
    assert 'kill -TERM "$(cat "$HOME"/xlmp-logs/train.pid)"' in stop[-1]
    _, out, _ = run_main(tpu.main, ["delete", *TPU_ARGS, "--dry-run"], capsys)
    assert commands(out) == [
        [
            "gcloud",
            "compute",
            "tpus",
            "tpu-vm",
            "delete",
            "xlmp-pod",
            "--zone=us-central2-b",
            "--project=my-proj",
            "--quiet",
        ]
    ]
    _, out, _ = run_main(tpu.main, ["delete", "--name=q", "--zone=europe-west4-a", "--queued", "--dry-run"], capsys)
    assert commands(out) == [
        ["gcloud", "compute", "tpus", "queued-resources", "delete", "q", "--zone=europe-west4-a", "--force", "--quiet"]
    ]


def test_tpu_refuses_local_workdir_on_multihost_and_bad_flags(capsys):
    code, _, err = run_main(
        tpu.main,
        ["up", *TPU_ARGS, "--accelerator_type=v4-32", f"--config={TINY}", "--workdir=/tmp/x", "--dry-run"],
        capsys,
    )
    assert code == 2 and "--workdir=/tmp/x" in err and "gs://" in err
    code, _, err = run_main(
        tpu.main,
        [
            "up",
            *TPU_ARGS,
            "--accelerator_type=v4-32",
            f"--config={TINY}",
            "--workdir=gs://b/r",
            "--dry-run",
            "--zoen=x",
        ],
        capsys,
    )
    assert code == 2 and "'--zoen=x'" in err


# ----------------------------------------------------------------------------------------------------------------
# SLURM and multi-node dry runs


def test_slurm_script_two_nodes_of_eight_gpus(capsys, tmp_path):
    workdir = tmp_path / "my run"
    code, out, err = run_main(
        slurm.main,
        ["--nodes=2", "--gpus_per_node=8", "--partition=gpu", "--time=24:00:00", f"--config={TINY}"]
        + [f"--workdir={workdir}", f"--log_dir={tmp_path}/logs", "--config.train.batch_size=64", "--dry-run"],
        capsys,
    )
    assert code == 0, err
    assert "mesh on 2 nodes x 8 GPUs (16 devices, 16 processes)" in out
    script = out[out.index("#!/bin/bash") : out.index("\nmkdir -p")]
    directives = [line for line in script.splitlines() if line.startswith("#SBATCH")]
    assert directives == [
        "#SBATCH --job-name=xlmp",
        "#SBATCH --nodes=2",
        "#SBATCH --ntasks-per-node=8",
        "#SBATCH --gpus-per-node=8",
        "#SBATCH --time=24:00:00",
        "#SBATCH --partition=gpu",
        f"#SBATCH --output={tmp_path}/logs/%x-%j.out",
        "#SBATCH --open-mode=append",
        "#SBATCH --signal=TERM@300",
        "#SBATCH --requeue",
    ]
    assert "JAX_LOCAL_DEVICE_IDS" not in script  # one task per GPU: JAX picks GPU SLURM_LOCALID itself
    (srun,) = [line for line in script.splitlines() if line.startswith("srun ")]
    assert shlex.split(srun) == [
        "srun", "--kill-on-bad-exit=1", "--label", str(REPO_ROOT / ".venv/bin/python"), "-m", "xlmp_jax.train",
        "--config=configs/tiny.py", f"--workdir={workdir}", "--config.train.batch_size=64",
    ]  # fmt: skip
    subprocess.run(["bash", "-n"], input=script, text=True, check=True)  # parses only; runs nothing
    assert commands(out[out.index("\nmkdir -p") :]) == [
        ["mkdir", "-p", f"{tmp_path}/logs"],
        ["sbatch", f"{tmp_path}/logs/xlmp.sbatch"],
    ]
    assert not workdir.exists()  # a dry run creates nothing


def test_slurm_one_process_per_node_sees_all_gpus(capsys, tmp_path):
    code, out, err = run_main(
        slurm.main,
        ["--nodes=2", "--gpus_per_node=4", "--process_per=node", f"--config={TINY}", f"--workdir={tmp_path}"]
        + ["--dry-run", "--env", "NCCL_DEBUG=WARN"],
        capsys,
    )
    assert code == 0, err
    assert "#SBATCH --ntasks-per-node=1" in out and "(8 devices, 2 processes)" in out
    assert "export NCCL_DEBUG=WARN\nexport JAX_LOCAL_DEVICE_IDS=0,1,2,3\n" in out


def test_multinode_over_ssh_quotes_twice(capsys):
    workdir = "/shared/my run's dir"
    code, out, err = run_main(
        multinode.main,
        ["--hosts=gpu-a,gpu-b", "--procs_per_node=2", "--gpus_per_node=2", "--repo_dir=/opt/x lmp", "--port=9000"]
        + [f"--config={TINY}", f"--workdir={workdir}", "--config.train.steps=70", "--dry-run"],
        capsys,
    )
    assert code == 0, err
    cmds = commands(out)
    assert [c[:4] for c in cmds] == [["ssh", "-o", "BatchMode=yes", h] for h in ("gpu-a", "gpu-a", "gpu-b", "gpu-b")]
    for i, c in enumerate(cmds):
        remote = shlex.split(c[4])  # what the remote shell runs
        assert remote[:5] == ["cd", "/opt/x lmp", "&&", "exec", "env"]
        assert remote[5:] == [
            f"JAX_LOCAL_DEVICE_IDS={i % 2}", ".venv/bin/python", "-m", "xlmp_jax.train", "--config=configs/tiny.py",
            f"--workdir={workdir}", "--config.train.steps=70", "--coordinator_address=gpu-a:9000",
            "--num_processes=4", f"--process_id={i}",
        ]  # fmt: skip


def test_multinode_plan_without_hosts(capsys):
    argv = [
        "--num_nodes=3",
        "--coordinator=10.0.0.1:8476",
        f"--config={TINY}",
        "--workdir=/shared/r",
        "--skip_preflight",
    ]
    code, out, _ = run_main(multinode.main, argv, capsys)
    lines = [line for line in out.splitlines() if not line.startswith("#")]
    assert code == 0 and len(lines) == 3
    assert [shlex.split(line)[-3:] for line in lines] == [
        ["--coordinator_address=10.0.0.1:8476", "--num_processes=3", f"--process_id={i}"] for i in range(3)
    ]
    code, _, err = run_main(multinode.main, [*argv[:1], "--coordinator=nohost", *argv[2:]], capsys)
    assert code == 2 and "'nohost' is not HOST:PORT" in err


# ----------------------------------------------------------------------------------------------------------------
# preflight errors


def test_preflight_errors_name_the_value(tmp_path):
    v4 = accelerators.tpu_accelerator("v4-32")
    ok = preflight.preflight(TINY, [], v4, str(tmp_path / "w"))
    assert ok.mesh == {"dcn_data": 1, "data": 16, "fsdp": 1, "tensor": 1}
    assert (tmp_path / "w").is_dir() and not list((tmp_path / "w").iterdir())  # probe file removed
    cases = [
        (["--config.train.batch_size=24"], "train.batch_size=24 is not divisible by the data-parallel size 16"),
        (["--config.mesh.tensor=3"], "mesh.tensor=3"),
        (
            ["--config.mesh.tensor=16", "--config.train.batch_size=2"],
            "train.batch_size=2 is not divisible by the 4 processes",
        ),
        (["--config.train.no_such_field=1"], "no_such_field"),
        (["--config.train.steps=many"], "many"),
        (["--config.data.mlm_rate=1.5"], "data.mlm_rate=1.5"),
    ]
    for overrides, message in cases:
        with pytest.raises(preflight.PreflightError, match=message):
            preflight.preflight(TINY, overrides, v4, str(tmp_path / "w"))
    with pytest.raises(preflight.PreflightError, match="config file not found: '/nonexistent/x.py'"):
        preflight.load_config("/nonexistent/x.py")
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(preflight.PreflightError, match="exists and is not a directory"):
        preflight.check_workdir(str(blocker / "run"))
    assert "skipped in --dry-run" in preflight.check_workdir("gs://bucket/run", dry_run=True)


def test_override_splitting():
    assert split_overrides(["--config.train.steps", "5", "--config.a=b c"]) == [
        "--config.train.steps=5",
        "--config.a=b c",
    ]
    with pytest.raises(LaunchError, match="'--stesp=5'"):
        split_overrides(["--stesp=5"])


# ----------------------------------------------------------------------------------------------------------------
# local: the supervisor, then the rehearsal


def test_supervise_stops_the_others_when_one_fails(tmp_path):
    out = io.StringIO()
    ready = tmp_path / "slow_is_up"  # "bad" fails only once "slow" has printed: no race on a loaded machine
    wait = f"import os, time\nwhile not os.path.exists({str(ready)!r}): time.sleep(0.01)\nraise SystemExit(3)"
    up = f"import time\nprint('up', flush=True)\nopen({str(ready)!r}, 'w').close()\ntime.sleep(60)"
    procs = [
        local.Proc("ok", [sys.executable, "-c", "print('hello')"]),
        local.Proc("bad", [sys.executable, "-c", wait]),
        local.Proc("slow", [sys.executable, "-c", up]),
    ]
    assert local.supervise(procs, grace_s=5, out=out) == 3
    text = out.getvalue()
    assert "[ok] hello" in text and "[slow] up" in text and "[launch] bad exited with 3; stopping the others" in text


def _tiny_corpus(directory) -> list[str]:
    """Two small languages and a SentencePiece model trained on them: the job's overrides for this data.

    Its own data keeps the rehearsal about launching (2 tasks, 1 layer: quick to build and compile);
    the data pipeline and vocabulary are the real ones, through the ``text`` source.
    """
    import random

    import sentencepiece as spm

    rng = random.Random(0)
    words = {
        "en": "the cat sat on a mat while dogs ran over green hills and birds sang songs".split(),
        "de": "der hund lief schnell über die grüne wiese und die katze schlief im warmen haus".split(),
    }
    for lang, vocab in words.items():
        lines = (" ".join(rng.choice(vocab) for _ in range(rng.randint(5, 15))) + "." for _ in range(300))
        (directory / f"{lang}.txt").write_text("\n".join(lines) + "\n")
    prefix = str(directory / "spm")
    spm.SentencePieceTrainer.train(
        input=f"{directory}/en.txt,{directory}/de.txt", model_prefix=prefix, vocab_size=50, pad_id=-1,
        minloglevel=2,
    )  # fmt: skip
    return [
        "--config.data.source=text",
        f"--config.data.path={directory}",
        "--config.data.languages=('en','de')",
        f"--config.data.vocab_path={prefix}.model",
        "--config.model.vocab_size=52",  # 50 pieces + <pad> and <mask> (XLM-R layout)
    ]


TINY_RUN = [
    "--config.model.num_layers=1",
    "--config.train.batch_size=8",
    "--config.data.seq_length=32",
    "--config.train.checkpoint_every=2",
    "--config.train.log_every=1",
    "--config.train.eval_every=0",
    "--config.train.warmup_steps=1",
    "--config.data.shuffle_buffer=64",
    "--config.train.compilation_cache_dir=",  # tests leave the user's cache alone
]


def _metrics_steps(workdir) -> list[int]:
    with open(workdir / "metrics.jsonl") as f:
        return [json.loads(line)["step"] for line in f if line.strip()]


@pytest.mark.slow
def test_rehearsal_two_processes_checkpoint_and_resume(tmp_path, capsys):
    """2 processes x 2 CPU devices = one 4-device mesh; 4 steps, then a relaunch to 6 resumes at 4."""
    from xlmp_jax.training import checkpoint_read

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    workdir = tmp_path / "rehearsal"
    argv = ["--num_processes=2", "--devices_per_process=2", f"--config={TINY}", f"--workdir={workdir}"]
    argv += [*TINY_RUN, *_tiny_corpus(corpus)]
    code, out, err = run_main(local.main, [*argv, "--config.train.steps=4", f"--log_dir={tmp_path}/logs1"], capsys)
    assert code == 0, out[-4000:] + err[-2000:]
    assert "preflight ok: mesh on 2 processes x 2 CPU devices (4 devices, 2 processes)" in err
    assert "[p0]" in out and "[p1]" in out
    assert "{'data': 4, 'fsdp': 1, 'tensor': 1}" in (tmp_path / "logs1" / "p0.log").read_text()  # one mesh
    assert checkpoint_read.all_steps(str(workdir)) == [2, 4]
    assert _metrics_steps(workdir) == [1, 2, 3, 4]
    assert json.loads((workdir / "config.json").read_text())["train"]["steps"] == 4

    code, out, err = run_main(local.main, [*argv, "--config.train.steps=6", f"--log_dir={tmp_path}/logs2"], capsys)
    assert code == 0, out[-4000:] + err[-2000:]
    assert re.search(r"resumed .*\b4\b", (tmp_path / "logs2" / "p0.log").read_text())  # from checkpoint 4
    assert checkpoint_read.all_steps(str(workdir))[-1] == 6
    assert _metrics_steps(workdir) == [1, 2, 3, 4, 5, 6]  # steps 1-4 were not trained again


def test_local_dry_run_prints_both_processes(capsys, tmp_path):
    code, out, err = run_main(
        local.main,
        ["--num_processes=2", "--devices_per_process=4", f"--config={TINY}", f"--workdir={tmp_path}/r", "--dry-run"]
        + ["--port=12345"],
        capsys,
    )
    assert code == 0, err
    cmds = commands(out)
    assert len(cmds) == 2
    for i, c in enumerate(cmds):
        assert c[0] == "env" and "XLMP_NUM_CPU_DEVICES=4" in c and "JAX_PLATFORMS=cpu" in c
        assert c[-3:] == ["--coordinator_address=localhost:12345", "--num_processes=2", f"--process_id={i}"]
    assert not os.path.exists(tmp_path / "r")


# ----------------------------------------------------------------------------------------------------------------
# Per-slice layouts (launch.layouts) and the compile check (--aot, xlmp_jax.aot)


def test_tpu_up_uses_the_slices_layout_and_the_user_wins(capsys):
    base = ["up", *TPU_ARGS, "--accelerator_type=v5litepod-256", "--config=configs/large.py"]
    base += ["--workdir=gs://b/run", "--dry-run", "--no_stream", "--config.data.vocab_path=/elsewhere/spm.model"]
    code, out, err = run_main(tpu.main, [*base, "--config.model.remat=full"], capsys)
    assert code == 0, err
    ssh = [c for c in commands(out) if any(a.startswith("--command=") for a in c)]
    (nohup,) = [line for c in ssh for line in remote_lines(c) if line.startswith("nohup ")]
    argv = shlex.split(nohup.split(" >> ")[0])
    assert argv[-6:] == [
        "--config.mesh.data=1", "--config.mesh.fsdp=-1", "--config.mesh.tensor=1", "--config.model.scan_layers=True",
        "--config.data.vocab_path=/elsewhere/spm.model", "--config.model.remat=full",
    ]  # fmt: skip
    assert "--config.model.remat=dots_no_batch" not in argv


def test_aot_check_verdicts():
    from launch.command_line import PreflightError

    def fake(rc, out, err=""):
        return lambda cmd, **kw: subprocess.CompletedProcess(cmd, rc, out, err)

    ok = preflight.aot_check("configs/large.py", ["--config.x=1"], "v5litepod-256", run=fake(0, "...\nfits: v5e x1\n"))
    assert ok == "fits: v5e x1"
    with pytest.raises(PreflightError, match="does not fit: v5litepod-256 x1: RESOURCE"):
        preflight.aot_check(
            "configs/large.py", [], "v5litepod-256", run=fake(3, "does not fit: v5litepod-256 x1: RESOURCE")
        )
    with pytest.raises(PreflightError, match=r"failed \(exit 1\): xlmp_jax.aot: error: bad"):
        preflight.aot_check("configs/large.py", [], "v9-1", run=fake(1, "", "xlmp_jax.aot: error: bad"))
