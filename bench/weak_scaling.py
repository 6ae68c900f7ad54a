"""Weak scaling on 1/2/4/8 simulated CPU devices: the sharded step adds no per-device work.

The per-device batch is fixed, so the global batch grows with the device count. Each device count runs
in its own subprocess (``--xla_force_host_platform_device_count`` must be set before JAX starts). For
each mesh layout (pure data parallel ``data=-1`` and FSDP ``fsdp=-1``) it reports XLA's compiled
cost analysis (FLOPs of the partitioned per-device program) and the step time. Simulated devices
share the host's cores, so the honest per-device time is ``step time / devices`` (total work grows
with the device count, the cores do not); the check is that FLOPs per device stay flat.

  python bench/weak_scaling.py                       # small model, per-device batch 4, seq 128
  python bench/weak_scaling.py --smoke
"""

from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench import harness  # noqa: E402


def worker(size: str, devices: int, per_device_batch: int, seq: int, layout: str, warmup: int, steps: int) -> dict:
    import jax

    assert len(jax.devices()) == devices, (len(jax.devices()), devices)
    mesh = {"data": -1, "fsdp": 1, "tensor": 1} if layout == "data" else {"data": 1, "fsdp": -1, "tensor": 1}
    model_cfg = harness.model_config(size, pool=True)
    step, cost = harness.make_xlmp_step(
        model_cfg, batch_size=per_device_batch * devices, seq_length=seq, dense_head=False, mesh=mesh, num_devices=None
    )
    analysis = cost()
    times, first = harness.time_steps(step, warmup, steps)
    return {
        "devices": devices,
        "layout": layout,
        "global_batch": per_device_batch * devices,
        "per_device_batch": per_device_batch,
        "xla_flops_per_device": analysis.get("flops"),
        "xla_bytes_per_device": analysis.get("bytes accessed"),
        "step_s": harness.stats(times),
        "first_step_s": first,
        "step_impl": "project",
    }


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", default="small")
    p.add_argument("--devices", default="1,2,4,8")
    p.add_argument("--layouts", default="data,fsdp")
    p.add_argument("--per_device_batch", type=int, default=4)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--json", default="")
    p.add_argument("--smoke", action="store_true")
    p.add_argument("--worker", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.smoke:
        args.size, args.devices, args.layouts, args.per_device_batch, args.seq = "tiny", "1,2", "fsdp", 1, 16
        args.warmup, args.steps = 1, 1
    if args.worker:
        harness.emit(
            worker(args.size, args.worker, args.per_device_batch, args.seq, args.layouts, args.warmup, args.steps)
        )
        return {}

    results = []
    for layout in args.layouts.split(","):
        for n in [int(x) for x in args.devices.split(",")]:
            env = {
                "XLA_FLAGS": f"--xla_force_host_platform_device_count={n}",
                "JAX_PLATFORMS": "cpu",
                "CUDA_VISIBLE_DEVICES": "",
            }
            res = harness.run_worker(
                [
                    os.path.abspath(__file__),
                    f"--worker={n}",
                    f"--size={args.size}",
                    f"--layouts={layout}",
                    f"--per_device_batch={args.per_device_batch}",
                    f"--seq={args.seq}",
                    f"--warmup={args.warmup}",
                    f"--steps={args.steps}",
                ],
                env=env,
            )
            res.setdefault("devices", n)
            res.setdefault("layout", layout)
            results.append(res)
            print(json.dumps(res), flush=True)
    lines = [
        f"{'layout':6} {'devices':>7} {'global B':>8} {'GFLOP/device':>12} {'vs 1 dev':>8} {'step s':>8} {'s/dev':>7}"
    ]
    base_flops: dict[str, float] = {}
    for r in results:
        if "step_s" not in r:
            lines.append(f"{r['layout']:6} {r['devices']:7} ERROR {r.get('error')}")
            continue
        flops = r.get("xla_flops_per_device") or float("nan")
        base_flops.setdefault(r["layout"], flops)
        r["flops_vs_1"] = flops / base_flops[r["layout"]]
        med = r["step_s"]["median"]
        lines.append(
            f"{r['layout']:6} {r['devices']:7} {r['global_batch']:8} {flops / 1e9:12.3f} {r['flops_vs_1']:8.3f} "
            f"{med:8.3f} {med / r['devices']:7.3f}"
        )
    print("\n".join(lines))
    summary = harness.finish(
        "weak_scaling",
        args.json,
        size=args.size,
        seq=args.seq,
        results=results,
    )
    return summary


if __name__ == "__main__":
    main()
