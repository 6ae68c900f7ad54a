"""The config walk: which of the project's files a run passes through from the train CLI to its train step.

    python -m bench.config_walk                          # this checkout, configs/tiny.py
    python -m bench.config_walk --repo=../before         # another checkout (e.g. a git worktree of an older commit)

Runs ``python -m xlmp_jax.train`` in a child process under ``sys.setprofile`` and records, in order, every call
of a function in the checkout (not its virtualenv) that receives a config as an argument (an ml_collections
``ConfigDict`` or one of the typed blocks: ``RunConfig``, ``TrainConfig``, ``MeshConfig``, ``DataConfig``,
``ModelConfig``, ``PoolConfig``), until the first call of ``make_train_step`` (where the resolved config reaches
the step); then the child exits without training. A config's own methods (the config as ``self``) are not
steps of the walk. Reported: the files visited, and
the *returns*: how often the walk enters a file it had already left (A -> B -> A counts one), a reader's
"back to that file again". The child works in a fresh temporary work directory and data cache, so both checkouts
walk the same path (the sample's shards prepared on first use included).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence

from bench.harness import REPO

# The child: profile calls into the checkout's files, stop at the step's builder, print the walk as JSON.
CHILD = r"""
import json, os, runpy, sys
root = os.path.abspath(sys.argv[1]) + os.sep
venv = os.path.join(root, ".venv")
walk = []

CONFIG_TYPES = {"ConfigDict", "FrozenConfigDict", "RunConfig", "TrainConfig", "MeshConfig", "DataConfig",
                "ModelConfig", "PoolConfig"}

def carries_config(frame):
    code = frame.f_code
    names = [n for n in code.co_varnames[: code.co_argcount + code.co_kwonlyargcount] if n not in ("self", "cls")]
    return any(type(frame.f_locals.get(n)).__name__ in CONFIG_TYPES for n in names)

def profile(frame, event, arg):
    if event != "call":
        return
    path = frame.f_code.co_filename
    if not path.startswith(root) or path.startswith(venv):
        return
    if frame.f_code.co_name == "make_train_step" or carries_config(frame):
        rel = os.path.relpath(path, root)
        if not walk or walk[-1] != rel:
            walk.append(rel)
    if frame.f_code.co_name == "make_train_step":
        sys.setprofile(None)
        print("CONFIG_WALK " + json.dumps(walk), flush=True)
        os._exit(0)

sys.argv = ["xlmp_jax.train"] + sys.argv[2:]
sys.setprofile(profile)
runpy.run_module("xlmp_jax.train", run_name="__main__", alter_sys=True)
"""


def walk(repo: str, config: str, python: str) -> list[str]:
    """The files the train CLI's start passes through in ``repo``, in order (consecutive repeats merged)."""
    with tempfile.TemporaryDirectory(prefix="xlmp_config_walk_") as tmp:
        env = dict(os.environ, XDG_CACHE_HOME=os.path.join(tmp, "cache"), TMPDIR=tmp, CUDA_VISIBLE_DEVICES="",
                   JAX_COMPILATION_CACHE_DIR=os.path.join(tmp, "jax"), TF_CPP_MIN_LOG_LEVEL="2")  # fmt: skip
        args = [f"--config={config}", f"--workdir={os.path.join(tmp, 'work')}", "--config.train.steps=100"]
        proc = subprocess.run([python, "-c", CHILD, repo, *args], cwd=repo, env=env, capture_output=True, text=True)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("CONFIG_WALK ")), None)
    if line is None:
        raise SystemExit(f"bench.config_walk: the train CLI in {repo} never reached make_train_step:\n"
                         f"{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")  # fmt: skip
    return json.loads(line.split(" ", 1)[1])


def summary(files: Sequence[str]) -> dict:
    """Files visited and returns (entries into a file the walk had already left)."""
    seen: set[str] = set()
    returns = 0
    for name in files:
        returns += name in seen
        seen.add(name)
    return dict(files=len(seen), returns=returns, steps=len(files), visited=sorted(seen))


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repo", default=str(REPO), help="the checkout to walk (default: this one)")
    parser.add_argument("--config", default="configs/tiny.py")
    parser.add_argument("--python", default=sys.executable)
    parser.add_argument("--json", default="", help="also write the walk here")
    args = parser.parse_args(argv)
    files = walk(os.path.abspath(args.repo), args.config, args.python)
    result = summary(files)
    print(f"bench.config_walk: {args.repo}: {result['files']} files, {result['returns']} returns "
          f"({result['steps']} file changes) from the train CLI to make_train_step")  # fmt: skip
    for name in result["visited"]:
        print(f"  {name}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(result, order=files, repo=args.repo, config=args.config), f, indent=1)


if __name__ == "__main__":
    main()
