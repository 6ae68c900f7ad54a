"""What a compiled (SPMD-partitioned) XLA program communicates and multiplies, read from its HLO text.

``compiled.as_text()`` is the per-device program after partitioning: every collective in it is one that
each device joins. ``collectives`` lists them with the bytes one device sends, by the ring-algorithm
convention (n = the size of the collective's replica group, ``size`` = the bytes of the buffer named):

* all-reduce:          2 (n - 1) / n x operand size   (reduce-scatter then all-gather around a ring)
* all-gather:          (n - 1) / n x output size       (the full, gathered buffer)
* reduce-scatter:      (n - 1) / n x operand size      (the full, unreduced buffer)
* all-to-all:          (n - 1) / n x operand size      (keeps its own 1/n)
* collective-permute:  operand size x (pairs with source != target) / devices  (mean over devices)

A multi-slice TPU program is compiled per slice: a collective over devices of several slices becomes an
ordinary one over the slice's devices plus a ``send`` to the host that carries the cross-slice part over
the data-center network (``_xla_megascale_transfer_type``); those sends are counted as that kind of
collective with ``dcn`` set, by the same convention over the slices.

Variadic (tuple) collectives count every operand. A collective inside a loop body counts once per
iteration: ``computation_runs`` gives how often each computation runs per run of the program (a ``while``
body its caller's count times the loop's ``known_trip_count``; fusions, calls and async wrappers their
caller's count), so a layer scan's collectives add up to the unrolled loop's.

One collective can be printed many times. The TPU compiler's async collective fusion starts a collective
and then carries it through the compute fusions that run while it is in flight: each of those fusions
holds a copy of the collective instruction with the *same* ``channel_id`` (the in-flight buffers and
progress flags pass from one to the next). A channel is therefore counted once, at the copy that runs
least often (the start, which is outside any loop its continuations were carried into); counting every
copy made the base model's embedding-table gather 20 collectives at 2 layers and ~8 more per layer. ``dot_flops`` adds up 2 x output x contracted size of
every ``dot`` by the JAX op that made it (the ``op_name`` metadata), to find which op carries FLOPs.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np

COLLECTIVES = ("all-reduce", "all-gather", "reduce-scatter", "all-to-all", "collective-permute")

DTYPE_BYTES = {
    "pred": 1, "s4": 0.5, "u4": 0.5, "s8": 1, "u8": 1, "f8e4m3fn": 1, "f8e5m2": 1,
    "s16": 2, "u16": 2, "f16": 2, "bf16": 2, "s32": 4, "u32": 4, "f32": 4,
    "s64": 8, "u64": 8, "f64": 8, "c64": 8, "c128": 16, "token": 0,
}  # fmt: skip

# `  [ROOT ]%name = <shape> <opcode>(<operands>)<, attributes>`; a tuple shape holds no "word(".
_INSTRUCTION = re.compile(r"^\s*(?:ROOT\s+)?%([^\s=]+)\s*=\s*(.+?)\s+([a-z][a-z0-9\-]*)\((.*)$")
_ARRAY = re.compile(r"\b([a-z][a-z0-9]*)\[([0-9,]*)\]")
_OPERAND = re.compile(r"%([^\s,()]+)")


def shape_dims(shape: str) -> list[tuple[str, tuple[int, ...]]]:
    """``'(f32[2,3]{1,0}, bf16[])'`` -> ``[('f32', (2, 3)), ('bf16', ())]`` (the arrays of a shape, in order)."""
    out = []
    for dtype, dims in _ARRAY.findall(shape):
        if dtype not in DTYPE_BYTES:
            raise ValueError(f"unknown HLO element type {dtype!r} in shape {shape!r}")
        out.append((dtype, tuple(int(d) for d in dims.split(",") if d)))
    return out


def shape_bytes(shape: str) -> float:
    """Bytes of every array in an HLO shape (a tuple's elements summed)."""
    return float(sum(DTYPE_BYTES[t] * math.prod(d) for t, d in shape_dims(shape)))


def _split_operands(rest: str) -> tuple[str, str]:
    """``'%a, %b), attr=...'`` -> (``'%a, %b'``, ``'attr=...'``): the operand list ends at its closing paren."""
    depth = 1
    for i, ch in enumerate(rest):
        depth += ch == "("
        depth -= ch == ")"
        if depth == 0:
            return rest[:i], rest[i + 1 :]
    raise ValueError(f"unbalanced operand list in HLO: {rest[:200]!r}")


def instructions(hlo_text: str) -> list[dict[str, Any]]:
    """Every instruction of every computation: name, shape, opcode, operand names, attribute text."""
    out = []
    for line in hlo_text.splitlines():
        m = _INSTRUCTION.match(line)
        if not m:
            continue
        name, shape, opcode, rest = m.groups()
        operands, attrs = _split_operands(rest)
        out.append(
            {"name": name, "shape": shape, "opcode": opcode, "operands": _OPERAND.findall(operands), "attrs": attrs}
        )
    return out


def group_size(attrs: str, num_devices: int) -> int:
    """The size of the replica groups of a collective, from its attribute text.

    Understands the three spellings XLA prints: explicit lists ``{{0,1},{2,3}}`` (``{}`` = all devices),
    iota lists ``[groups,size]<=[...]`` and named meshes ``mesh['axis_0'=2,'axis_1'=4] {'axis_1'}`` (optionally
    with ``device_ids=(...)`` before the braces).
    """
    m = re.search(r"replica_groups=mesh\[([^\]]*)\][^{]*\{([^}]*)\}", attrs)  # may name device_ids=(...) between
    if m:
        sizes = {k: int(v) for k, v in re.findall(r"'([^']+)'=(\d+)", m.group(1))}
        axes = re.findall(r"'([^']+)'", m.group(2))
        unknown = [a for a in axes if a not in sizes]
        if unknown:
            raise ValueError(f"replica group axes {unknown} not in the mesh {m.group(1)!r}")
        return math.prod(sizes[a] for a in axes)
    m = re.search(r"replica_groups=\[([0-9,]+)\]<=", attrs)
    if m:
        return int(m.group(1).split(",")[-1])
    m = re.search(r"replica_groups=\{(\{[0-9,]*\})?", attrs)
    if m:
        return len(m.group(1).strip("{}").split(",")) if m.group(1) else num_devices
    raise ValueError(f"no replica_groups in collective attributes {attrs[:200]!r}")


def _iota(spec: str, count: int) -> np.ndarray:
    """``'[4,2]T(1,0)'`` -> the ids 0..count-1 reshaped to [4, 2], transposed by (1, 0), flattened; a plain
    ``'(0,2,1,3)'`` list is taken as written."""
    m = re.fullmatch(r"\[([0-9,]+)\](?:T\(([0-9,]+)\))?", spec.strip())
    if m:
        dims = [int(d) for d in m.group(1).split(",")]
        ids = np.arange(math.prod(dims)).reshape(dims)
        if m.group(2):
            ids = ids.transpose([int(a) for a in m.group(2).split(",")])
        return ids.reshape(-1)
    listed = [int(d) for d in re.findall(r"\d+", spec)]
    if len(listed) != count:
        raise ValueError(f"device list {spec[:200]!r} does not name {count} devices")
    return np.asarray(listed)


def replica_groups(attrs: str, num_devices: int) -> list[list[int]]:
    """The device ids of each replica group of a collective (the spellings ``group_size`` reads)."""
    m = re.search(r"replica_groups=mesh\[([^\]]*)\],?\s*(?:device_ids=(\([^{]*\)))?\s*\{([^}]*)\}", attrs)
    if m:
        sizes = [(k, int(v)) for k, v in re.findall(r"'([^']+)'=(\d+)", m.group(1))]
        named = re.findall(r"'([^']+)'", m.group(3))
        count = math.prod(v for _, v in sizes)
        ids = _iota(m.group(2)[1:-1], count) if m.group(2) else np.arange(count)
        ids = ids.reshape([v for _, v in sizes])
        axes = [k for k, _ in sizes]
        order = [i for i, k in enumerate(axes) if k not in named] + [axes.index(k) for k in named]
        size = math.prod(dict(sizes)[k] for k in named)
        return ids.transpose(order).reshape(-1, size).tolist()
    m = re.search(r"replica_groups=\[([0-9,]+)\]<=(\[[0-9,]+\](?:T\([0-9,]+\))?)", attrs)
    if m:
        groups, size = (int(d) for d in m.group(1).split(","))
        return _iota(m.group(2), groups * size).reshape(groups, size).tolist()
    m = re.search(r"replica_groups=\{((?:\{[0-9,]*\},?)*)\}", attrs)
    if m:
        found = [[int(d) for d in g.split(",") if d] for g in re.findall(r"\{([0-9,]*)\}", m.group(1))]
        return found or [list(range(num_devices))]
    raise ValueError(f"no replica_groups in collective attributes {attrs[:200]!r}")


def crosses_slices(groups: list[list[int]], slice_of: Sequence[int]) -> bool:
    """Whether any group holds devices of two slices: its traffic then crosses the data-center network."""
    return any(len({slice_of[d] for d in group}) > 1 for group in groups)


def _permute_pairs(attrs: str) -> list[list[int]]:
    """A collective-permute's ``source_target_pairs`` as ``[[source, target], ...]``."""
    listed = attrs.split("source_target_pairs=", 1)[-1].split("}}", 1)[0] + "}"
    return [[int(s), int(t)] for s, t in re.findall(r"\{(\d+),(\d+)\}", listed)]


_COMPUTATION = re.compile(r"^(ENTRY\s+)?%?([^\s({]+)\s*(?:\(.*)?\{\s*$")
_CALLEES = re.compile(r"\b(?:body|calls|to_apply|true_computation|false_computation)=%([^\s,()}]+)")
_BRANCHES = re.compile(r"branch_computations=\{([^}]*)\}")
_TRIP_COUNT = re.compile(r'"known_trip_count":\{"n":"(\d+)"')


def computations(hlo_text: str) -> dict[str, list[str]]:
    """The program's computations in the order printed (callees before callers): name -> instruction lines.
    The entry computation is named ``'ENTRY'``."""
    out: dict[str, list[str]] = {}
    current = None
    for line in hlo_text.splitlines():
        m = _COMPUTATION.match(line)
        if m and not line.startswith(" "):
            current = "ENTRY" if m.group(1) else m.group(2).lstrip("%")
            out[current] = []
        elif line.startswith("}"):
            current = None
        elif current is not None:
            out[current].append(line)
    return out


_INT_CONSTANT = re.compile(r"=\s*[su](?:32|64)\[\]\S*\s+constant\((\d+)\)")


def _condition_bound(lines: list[str]) -> float:
    """A loop's trip count from its condition when XLA printed none (the TPU compiler does not): the one
    integer constant the condition compares the counter with (a scan counts 0 .. N-1); 1 if not that form."""
    values = {int(m.group(1)) for line in lines if (m := _INT_CONSTANT.search(line))}
    return float(values.pop()) if len(values) == 1 and any("compare(" in line for line in lines) else 1.0


def computation_runs(hlo_text: str, trip_counts: bool = True) -> dict[str, float]:
    """How many times each computation runs per run of the program (see the module docstring).

    ``trip_counts=False`` counts every loop body once (as XLA's ``cost_analysis`` does). A loop's trip
    count is XLA's ``known_trip_count``, else the bound in its condition (``_condition_bound``);
    one whose count neither gives counts once; ``async-update``/``-done`` name the
    computation their ``-start`` already counted and add nothing; each branch of a conditional counts as
    if taken (an upper bound).
    """
    comps = computations(hlo_text)
    runs: dict[str, float] = {name: 0.0 for name in comps}
    runs["ENTRY"] = 1.0
    for name in reversed(list(comps)):  # callers are printed after their callees
        for line in comps[name]:
            m = _INSTRUCTION.match(line)
            if not m or m.group(3).endswith(("-done", "-update")):
                continue
            trips = 1.0
            if m.group(3) == "while":
                found = _TRIP_COUNT.search(line)
                cond = re.search(r"condition=%([^\s,()}]+)", line)
                trips = (
                    float(found.group(1)) if found else _condition_bound(comps.get(cond.group(1), []) if cond else [])
                )
                trips = trips if trip_counts else 1.0
            callees = _CALLEES.findall(line)
            for group in _BRANCHES.findall(line):
                callees += [c.strip().lstrip("%") for c in group.split(",") if c.strip()]
            for callee in callees:
                if callee in runs:
                    body = m.group(3) == "while" and f"body=%{callee}" in line
                    runs[callee] += runs[name] * (trips if body else 1.0)
    return runs


def collectives(hlo_text: str, num_devices: int, slice_of: Sequence[int] = ()) -> list[dict[str, Any]]:
    """Each collective of the program: ``op``, ``name``, ``group`` (n), ``size`` (bytes of the buffer
    the convention names), ``runs`` (times it runs per program run: loop trip counts), ``bytes`` (what
    one device sends over all those runs, by the module docstring's convention) and ``dcn`` (whether a
    replica group spans two slices; ``slice_of`` gives each device id's slice, none: never)."""
    instrs = []
    comps = computations(hlo_text)
    runs = computation_runs(hlo_text)
    for comp, lines in comps.items():
        instrs += [dict(ins, runs=runs[comp]) for ins in instructions("\n".join(lines))]
    if not comps:  # a bare instruction list (no computation headers): every instruction runs once
        instrs = [dict(ins, runs=1.0) for ins in instructions(hlo_text)]
    shapes = {i["name"]: i["shape"] for i in instrs}
    out = []
    slices = len(set(slice_of)) or 1
    for ins in instrs:
        opcode = ins["opcode"]
        base = opcode[: -len("-start")] if opcode.endswith("-start") else opcode
        if opcode == "send" and (m := _MEGASCALE.search(ins["attrs"])):
            out.append(_megascale_send(ins, m.group(1), shapes, slices))
            continue
        if base not in COLLECTIVES:
            continue
        try:
            operand_bytes = sum(shape_bytes(shapes[o]) for o in ins["operands"])
        except KeyError as e:
            raise ValueError(f"collective {ins['name']} reads {e.args[0]!r}, not defined in the HLO text") from None
        if base == "collective-permute":
            pairs = _permute_pairs(ins["attrs"])
            moving = sum(1 for source, target in pairs if source != target) / num_devices  # mean over devices
            out.append(
                dict(op=base, name=ins["name"], group=2, size=operand_bytes, runs=ins["runs"],
                     bytes=ins["runs"] * operand_bytes * moving,
                     dcn=slices > 1 and crosses_slices(pairs, slice_of))
            )  # fmt: skip
            continue
        n = group_size(ins["attrs"], num_devices)
        if base == "all-gather":
            size = shape_bytes(ins["shape"])
            if opcode.endswith("-start"):  # (operands..., outputs...): the gathered half
                size -= operand_bytes
        else:
            size = operand_bytes
        factor = 2.0 * (n - 1) / n if base == "all-reduce" else (n - 1) / n
        dcn = slices > 1 and crosses_slices(replica_groups(ins["attrs"], num_devices), slice_of)
        out.append(
            dict(op=base, name=ins["name"], group=n, size=size, runs=ins["runs"], bytes=ins["runs"] * factor * size,
                 dcn=dcn)
        )  # fmt: skip
    return _one_per_channel(out, instrs)


_MEGASCALE = re.compile(r'_xla_megascale_transfer_type="([A-Z_]+)"')
# Bytes one chip sends across slices per byte of what it hands the host, by the ring convention over
# S slices: an all-gather's input is the chip's own part, the others' inputs are the full buffer.
_MEGASCALE_FACTOR = {
    "ALL_REDUCE": lambda s: 2.0 * (s - 1) / s,
    "ALL_GATHER": lambda s: float(s - 1),
    "REDUCE_SCATTER": lambda s: (s - 1) / s,
    "ALL_TO_ALL": lambda s: (s - 1) / s,
}


def _megascale_send(ins: dict[str, Any], kind: str, shapes: dict[str, str], slices: int) -> dict[str, Any]:
    """A multi-slice TPU program's cross-slice collective: the compiler leaves the in-slice part as an ordinary
    collective and hands the cross-slice part to the host as a ``send`` (``_xla_megascale_transfer_type``)."""
    size = shape_bytes(shapes[ins["operands"][0]])
    factor = _MEGASCALE_FACTOR.get(kind, lambda s: 1.0)(max(slices, 2))
    op = kind.lower().replace("_", "-") if kind.lower().replace("_", "-") in COLLECTIVES else "collective-permute"
    return dict(op=op, name=ins["name"], group=slices, size=size, runs=ins["runs"], bytes=ins["runs"] * factor * size,
                dcn=True)  # fmt: skip


_CHANNEL = re.compile(r"\bchannel_id=(\d+)")


def _one_per_channel(found: list[dict[str, Any]], instrs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``found`` with each channel's collective kept once: the copy that runs least often (see the module
    docstring); collectives without a ``channel_id`` are all kept."""
    channel = {i["name"]: m.group(1) for i in instrs if (m := _CHANNEL.search(i["attrs"]))}
    first: dict[tuple[str, str], dict[str, Any]] = {}
    out = []
    for c in found:
        key = (c["op"], channel.get(c["name"], ""))
        if not key[1]:
            out.append(c)
        elif key not in first or c["runs"] < first[key]["runs"]:
            first[key] = c
    return out + list(first.values())


def collective_bytes(hlo_text: str, num_devices: int, slice_of: Sequence[int] = ()) -> dict[str, float]:
    """Bytes one device sends per run of the program, by collective kind, plus ``total`` and ``dcn`` (the
    part of the total whose groups span slices; see ``collectives``)."""
    totals = {op: 0.0 for op in COLLECTIVES}
    dcn = 0.0
    for c in collectives(hlo_text, num_devices, slice_of):
        totals[c["op"]] += c["bytes"]
        dcn += c["bytes"] if c["dcn"] else 0.0
    totals["total"] = sum(totals[op] for op in COLLECTIVES)
    totals["dcn"] = dcn
    return totals


def dot_flops(hlo_text: str) -> dict[str, float]:
    """FLOPs of the program's ``dot`` instructions (2 x output elements x contracted size), summed by the
    JAX op (``op_name`` metadata, else ``'dot (no op_name)'``) that produced them."""
    instrs = instructions(hlo_text)
    shapes = {i["name"]: i["shape"] for i in instrs}
    out: dict[str, float] = defaultdict(float)
    for ins in instrs:
        if ins["opcode"] != "dot":
            continue
        (_, lhs_dims), *_ = shape_dims(shapes[ins["operands"][0]])
        m = re.search(r"lhs_contracting_dims=\{([0-9,]*)\}", ins["attrs"])
        contracted = math.prod(lhs_dims[int(d)] for d in m.group(1).split(",") if d) if m else 1
        (_, out_dims), *_ = shape_dims(ins["shape"])
        where = re.search(r'op_name="([^"]*)"', ins["attrs"])
        out[where.group(1) if where else "dot (no op_name)"] += 2.0 * math.prod(out_dims) * contracted
    return dict(out)


# Element-wise opcodes that XLA's cost analysis counts as one FLOP per output element (transcendentals
# such as exp/log/tanh are counted apart by XLA, and so are left out here; data movement is free).
ELEMENTWISE_FLOP_OPS = frozenset(
    "add subtract multiply divide maximum minimum negate abs compare select clamp sign floor ceil "
    "round-nearest-even round-nearest-afz and or xor not convert remainder".split()
)


def flops_by_op(hlo_text: str) -> dict[str, float]:
    """Approximate per-op FLOPs of the program: ``dot_flops`` plus one per element of element-wise
    arithmetic and one per reduced input element, summed by the JAX op (``op_name``) that made them.

    Close to XLA's own ``cost_analysis()['flops']`` (the totals are compared in the cost table), but
    attributable: diffing two layouts' tables names the op that one of them spends more on.
    """
    instrs = instructions(hlo_text)
    shapes = {i["name"]: i["shape"] for i in instrs}
    out: dict[str, float] = defaultdict(float, dot_flops(hlo_text))
    for ins in instrs:
        op = ins["opcode"]
        if op in ELEMENTWISE_FLOP_OPS:
            flops = float(sum(math.prod(d) for _, d in shape_dims(ins["shape"])))
        elif op == "reduce":
            half = len(ins["operands"]) // 2  # (inputs..., init values...)
            flops = float(sum(math.prod(d) for o in ins["operands"][:half] for _, d in shape_dims(shapes[o])))
        else:
            continue
        where = re.search(r'op_name="([^"]*)"', ins["attrs"])
        out[where.group(1) if where else f"{op} (no op_name)"] += flops
    return dict(out)


_FREE_OPS = frozenset(
    "parameter constant get-tuple-element tuple bitcast while call conditional after-all partition-id replica-id "
    "opt-barrier custom-call".split()
)


def unfused_bytes(hlo_text: str, trip_counts: bool = True) -> float:
    """Bytes read and written by the program's unfused instructions (each fusion, collective, copy...: its
    operands plus its output), times how often each runs (``computation_runs``; ``trip_counts=False``: every
    loop body once). A rough stand-in for XLA's ``bytes accessed`` whose *ratio* with and without trip
    counts says how much a loop adds (``loop_factor``)."""
    comps = computations(hlo_text)
    runs = computation_runs(hlo_text, trip_counts)
    fused = set()
    for lines in comps.values():
        for line in lines:
            m = _INSTRUCTION.match(line)
            if m and (m.group(3) == "fusion" or "to_apply=" in line):
                fused |= set(re.findall(r"(?:calls|to_apply)=%([^\s,()}]+)", line))
    instrs = {name: instructions("\n".join(lines)) for name, lines in comps.items()}
    shapes = {i["name"]: i["shape"] for group in instrs.values() for i in group}
    total = 0.0
    for name, group in instrs.items():
        if name in fused or not runs.get(name):
            continue
        for ins in group:
            if ins["opcode"] in _FREE_OPS or ins["opcode"].endswith("-done"):
                continue
            operands = sum(shape_bytes(shapes[o]) for o in ins["operands"] if o in shapes)
            total += runs[name] * (operands + shape_bytes(ins["shape"]))
    return total


def loop_factor(hlo_text: str) -> float:
    """``unfused_bytes`` with loop trip counts over without: 1 for a program without loops; for ``nn.scan``
    over N layers about (outside + N x one layer) / (outside + one layer). XLA's ``cost_analysis`` counts a
    loop body once, so its ``bytes accessed`` times this factor estimates the program's (``xlmp_jax.aot``;
    checked against the Python-loop program by ``bench.aot_table --check``)."""
    once = unfused_bytes(hlo_text, trip_counts=False)
    return unfused_bytes(hlo_text) / once if once else 1.0
