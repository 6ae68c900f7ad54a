"""The HLO collective-bytes and matmul-FLOPs reader (xlmp_jax.runtime.hlo_cost) and the cost table's formulas.

Collectives come from small jitted functions on the 8 simulated CPU devices of conftest, whose bytes
follow from their shapes and group sizes by the ring convention of ``xlmp_jax.runtime.hlo_cost``.
"""

import argparse

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from bench import cost_table
from xlmp_jax.runtime import hlo_cost

try:
    from jax import shard_map
except ImportError:  # older JAX
    from jax.experimental.shard_map import shard_map


def _mesh(shape, names):
    return Mesh(np.array(jax.devices()[: int(np.prod(shape))]).reshape(shape), names)


def _hlo(fn, *args) -> str:
    return jax.jit(fn).lower(*args).compile().as_text()


def test_psum_all_reduce_bytes():
    mesh = _mesh((8,), ("x",))
    x = jax.device_put(jnp.ones((8, 1024), jnp.float32), NamedSharding(mesh, P("x")))
    fn = shard_map(lambda a: jax.lax.psum(a, "x"), mesh=mesh, in_specs=P("x"), out_specs=P())
    found = hlo_cost.collectives(_hlo(fn, x), 8)
    reduces = [c for c in found if c["op"] == "all-reduce"]
    assert [(c["group"], c["size"]) for c in reduces] == [(8, 1024 * 4)]
    assert hlo_cost.collective_bytes(_hlo(fn, x), 8)["all-reduce"] == pytest.approx(2 * 7 / 8 * 1024 * 4)


def test_all_reduce_over_a_sub_axis_uses_the_group_size():
    mesh = _mesh((2, 4), ("a", "b"))
    # fp32: XLA:CPU promotes a bf16 all-reduce to fp32 (the parser then rightly counts 4 bytes an element)
    x = jax.device_put(jnp.ones((8, 256), jnp.float32), NamedSharding(mesh, P(("a", "b"))))
    fn = shard_map(lambda v: jax.lax.psum(v, "b"), mesh=mesh, in_specs=P(("a", "b")), out_specs=P("a"))
    bytes_ = hlo_cost.collective_bytes(_hlo(fn, x), 8)
    assert bytes_["all-reduce"] == pytest.approx(2 * 3 / 4 * 256 * 4)
    assert bytes_["total"] == bytes_["all-reduce"]


def test_resharding_to_replicated_is_an_all_gather_of_the_full_buffer():
    mesh = _mesh((8,), ("x",))
    x = jax.device_put(jnp.ones((64, 32), jnp.float32), NamedSharding(mesh, P("x")))
    fn = jax.jit(lambda a: a * 2.0, out_shardings=NamedSharding(mesh, P()))
    text = fn.lower(x).compile().as_text()
    gathers = [c for c in hlo_cost.collectives(text, 8) if c["op"] == "all-gather"]
    assert [(c["group"], c["size"]) for c in gathers] == [(8, 64 * 32 * 4)]
    assert hlo_cost.collective_bytes(text, 8)["all-gather"] == pytest.approx(7 / 8 * 64 * 32 * 4)


def test_collectives_in_a_loop_count_once_per_iteration():
    """A psum inside a 5-step loop sends 5 times the bytes of the same psum outside one."""
    mesh = _mesh((8,), ("x",))
    x = jax.device_put(jnp.ones((8, 256), jnp.float32), NamedSharding(mesh, P("x")))

    def looped(a):
        return jax.lax.fori_loop(0, 5, lambda i, v: v + jax.lax.psum(v, "x"), a)

    fn = shard_map(looped, mesh=mesh, in_specs=P("x"), out_specs=P("x"))
    text = _hlo(fn, x)
    reduces = [c for c in hlo_cost.collectives(text, 8) if c["op"] == "all-reduce"]
    assert [c["runs"] for c in reduces] == [5.0]
    assert hlo_cost.collective_bytes(text, 8)["all-reduce"] == pytest.approx(5 * 2 * 7 / 8 * 256 * 4)


LOOP_HLO = """
%body (p: (s32[], f32[4])) -> (s32[], f32[4]) {
  %p = (s32[], f32[4]{0}) parameter(0)
  %x = f32[4]{0} get-tuple-element(%p), index=1
  %ar = f32[4]{0} all-reduce(%x), replica_groups={}, to_apply=%add
  ROOT %t = (s32[], f32[4]{0}) tuple(%i, %ar)
}

%inner (q: f32[4]) -> f32[4] {
  %q = f32[4]{0} parameter(0)
  ROOT %ag = f32[4]{0} all-gather(%q), replica_groups={{0,1}}, dimensions={0}
}

ENTRY %main (a: f32[4]) -> f32[4] {
  %a = f32[4]{0} parameter(0)
  %w = (s32[], f32[4]{0}) while(%init), condition=%cond, body=%body, backend_config={"known_trip_count":{"n":"24"}}
  %s = ((f32[4]{0}), f32[4]{0}) async-start(%a), calls=%inner
  ROOT %d = f32[4]{0} async-done(%s), calls=%inner
}
"""


def test_hand_written_loop_and_async_wrapper():
    runs = hlo_cost.computation_runs(LOOP_HLO)
    assert (runs["ENTRY"], runs["body"], runs["inner"]) == (1.0, 24.0, 1.0)  # -done adds nothing
    by_name = {c["name"]: c for c in hlo_cost.collectives(LOOP_HLO, 8)}
    assert by_name["ar"]["bytes"] == pytest.approx(24 * 2 * 7 / 8 * 16)
    assert by_name["ag"]["bytes"] == pytest.approx(1 / 2 * 16)


def test_sharded_matmul_flops_per_device():
    mesh = _mesh((8,), ("x",))
    a = jax.device_put(jnp.ones((64, 32), jnp.float32), NamedSharding(mesh, P("x")))
    b = jax.device_put(jnp.ones((32, 16), jnp.float32), NamedSharding(mesh, P()))
    text = _hlo(lambda u, v: u @ v, a, b)
    assert sum(hlo_cost.dot_flops(text).values()) == 2 * (64 // 8) * 32 * 16
    assert hlo_cost.collective_bytes(text, 8)["total"] == 0


# The three replica-group spellings XLA prints, a collective-permute and an async all-gather.
HAND_HLO = """
ENTRY %main {
  %p0 = f32[16,4]{1,0} parameter(0)
  %p1 = bf16[8]{0} parameter(1)
  %rs = f32[4,4]{1,0} reduce-scatter(%p0), channel_id=1, replica_groups={{0,1,2,3},{4,5,6,7}}, dimensions={0}
  %ar = (f32[16,4]{1,0}, bf16[8]{0}) all-reduce(%p0, %p1), channel_id=2, replica_groups=[4,2]<=[8], to_apply=%add
  %a2a = f32[16,4]{1,0} all-to-all(%p0), channel_id=3, replica_groups={}, dimensions={0}
  %cp = bf16[8]{0} collective-permute(%p1), channel_id=4, source_target_pairs={{0,1},{1,0},{2,2}}
  %ags = (bf16[8]{0}, bf16[64]{0}) all-gather-start(%p1), channel_id=5, replica_groups=mesh['x'=2,'y'=4] {'x','y'}, dimensions={0}
  %agd = bf16[64]{0} all-gather-done(%ags)
  ROOT %ar2 = bf16[8]{0} all-reduce(%p1), channel_id=6, replica_groups=mesh['a'=2,'b'=4], device_ids=([4,2]T(1,0)) {'a'}, to_apply=%add
}
"""


def test_hand_written_hlo_group_spellings():
    by_name = {c["name"]: c for c in hlo_cost.collectives(HAND_HLO, 8)}
    assert set(by_name) == {"rs", "ar", "a2a", "cp", "ags", "ar2"}  # the -done half is not counted again
    assert (by_name["rs"]["group"], by_name["rs"]["bytes"]) == (4, 3 / 4 * 16 * 4 * 4)
    assert (by_name["ar"]["group"], by_name["ar"]["bytes"]) == (2, 2 * 1 / 2 * (16 * 4 * 4 + 8 * 2))
    assert (by_name["a2a"]["group"], by_name["a2a"]["bytes"]) == (8, 7 / 8 * 16 * 4 * 4)
    assert by_name["cp"]["bytes"] == 8 * 2 * 2 / 8  # two of the three pairs move data, over 8 devices
    assert (by_name["ags"]["group"], by_name["ags"]["size"]) == (8, 64 * 2)
    assert (by_name["ar2"]["group"], by_name["ar2"]["bytes"]) == (2, 2 * 1 / 2 * 8 * 2)


def test_unknown_element_type_is_named():
    with pytest.raises(ValueError, match="q99"):
        hlo_cost.shape_bytes("q99[4]")


@pytest.mark.slow
def test_tiny_config_data_parallel_against_the_formulas():
    """The compiled tiny step's matmuls match the FLOPs formula, and its gradient all-reduce is the
    formula's plus one more copy of the tied word-embedding gradient (XLA:CPU reduces the lookup's and the
    decoder's contributions separately; see BENCHMARKS.md)."""
    args = argparse.Namespace(batch=16, seq=32, layers=0, fast_backend=1)
    row, _ = cost_table.measure("tiny", (8, 1, 1), args)
    config = cost_table.run_config("tiny", (8, 1, 1), 16, 32)
    assert row["dots_over_formula"] == pytest.approx(1.0, abs=0.01)
    assert row["formula_flops"] == pytest.approx(cost_table.flops_formula(config, 8))
    embedding = config.model.vocab_size * config.model.hidden_size * 4
    expected = row["comm_formula"]["dp_grad_all_reduce"] + 2 * 7 / 8 * embedding
    assert row["comm_bytes"]["all-reduce"] == pytest.approx(expected, rel=0.01)
    assert row["comm_formula"]["fsdp_weight_all_gather"] == row["comm_formula"]["tp_activation_all_reduce"] == 0


def test_bad_layout_is_named():
    with pytest.raises(ValueError, match="'8,1'"):
        cost_table.parse_layouts("8,1,1;8,1")


# The TPU compiler's async collective fusion: one all-gather (channel 7) started in the entry computation and
# carried through a fusion inside a loop body that runs 12 times; every copy holds the collective.
CARRIED_HLO = """
%carry (c0: bf16[1,8]) -> bf16[4,8] {
  %c0 = bf16[1,8]{1,0} parameter(0)
  ROOT %ag.carried = bf16[4,8]{1,0} all-gather(%c0), channel_id=7, replica_groups=[1,4]<=[4], dimensions={0}
}

%body (p: (s32[], bf16[1,8])) -> (s32[], bf16[1,8]) {
  %p = (s32[], bf16[1,8]{1,0}) parameter(0)
  %x = bf16[1,8]{1,0} get-tuple-element(%p), index=1
  %f = bf16[4,8]{1,0} fusion(%x), kind=kCustom, calls=%carry
  %ar = bf16[1,8]{1,0} all-reduce(%x), channel_id=9, replica_groups=[1,4]<=[4], to_apply=%add
  ROOT %t = (s32[], bf16[1,8]{1,0}) tuple(%i, %ar)
}

%start (s0: bf16[1,8]) -> bf16[4,8] {
  %s0 = bf16[1,8]{1,0} parameter(0)
  ROOT %ag.start = bf16[4,8]{1,0} all-gather(%s0), channel_id=7, replica_groups=[1,4]<=[4], dimensions={0}
}

ENTRY %main (a: bf16[1,8]) -> bf16[4,8] {
  %a = bf16[1,8]{1,0} parameter(0)
  %g = bf16[4,8]{1,0} fusion(%a), kind=kCustom, calls=%start
  %w = (s32[], bf16[1,8]{1,0}) while(%init), condition=%cond, body=%body, backend_config={"known_trip_count":{"n":"12"}}
  ROOT %g2 = bf16[4,8]{1,0} fusion(%a), kind=kCustom, calls=%carry
}
"""


def test_a_collective_carried_through_fusions_counts_once():
    found = {c["name"]: c for c in hlo_cost.collectives(CARRIED_HLO, 4)}
    assert set(found) == {"ag.start", "ar"}  # channel 7 once, at its start outside the loop
    assert found["ag.start"]["bytes"] == pytest.approx(3 / 4 * 4 * 8 * 2)
    assert found["ar"]["bytes"] == pytest.approx(12 * 2 * 3 / 4 * 8 * 2)  # a loop body's own collective: x 12


def test_replica_groups_in_each_spelling():
    assert hlo_cost.replica_groups("replica_groups={{0,1,2,3},{4,5,6,7}}, dimensions={0}", 8) == [
        [0, 1, 2, 3],
        [4, 5, 6, 7],
    ]
    assert hlo_cost.replica_groups("replica_groups={}, to_apply=%add", 4) == [[0, 1, 2, 3]]
    assert hlo_cost.replica_groups("replica_groups=[4,2]<=[8], to_apply=%add", 8) == [[0, 1], [2, 3], [4, 5], [6, 7]]
    assert hlo_cost.replica_groups("replica_groups=[2,4]<=[4,2]T(1,0), to_apply=%add", 8) == [
        [0, 2, 4, 6],
        [1, 3, 5, 7],
    ]
    # A named mesh (data=2, fsdp=4): a group over 'axis_0' pairs devices 4 apart, one over 'axis_1' is a row.
    mesh = "replica_groups=mesh['axis_0'=2,'axis_1'=4] {'axis_0'}, to_apply=%add"
    assert hlo_cost.replica_groups(mesh, 8) == [[0, 4], [1, 5], [2, 6], [3, 7]]
    assert hlo_cost.replica_groups(mesh.replace("{'axis_0'}", "{'axis_1'}"), 8) == [[0, 1, 2, 3], [4, 5, 6, 7]]
    permuted = "replica_groups=mesh['a'=2,'b'=4], device_ids=([4,2]T(1,0)) {'a'}, to_apply=%add"
    assert hlo_cost.replica_groups(permuted, 8) == [[0, 1], [2, 3], [4, 5], [6, 7]]
    for groups in ([[0, 4], [1, 5], [2, 6], [3, 7]], [[0, 1], [2, 3], [4, 5], [6, 7]]):  # sizes agree
        assert len(groups[0]) == hlo_cost.group_size(mesh if groups[0][1] == 4 else permuted, 8)


def test_collectives_across_slices_are_counted_as_dcn():
    text = """
ENTRY %main {
  %p0 = f32[16]{0} parameter(0)
  %data = f32[16]{0} all-reduce(%p0), channel_id=1, replica_groups=mesh['axis_0'=2,'axis_1'=4] {'axis_0'}, to_apply=%add
  ROOT %fsdp = f32[16]{0} all-reduce(%p0), channel_id=2, replica_groups=mesh['axis_0'=2,'axis_1'=4] {'axis_1'}, to_apply=%add
}
"""
    slice_of = [0, 0, 0, 0, 1, 1, 1, 1]  # two slices of four devices: the data axis crosses them
    found = {c["name"]: c for c in hlo_cost.collectives(text, 8, slice_of)}
    assert (found["data"]["dcn"], found["fsdp"]["dcn"]) == (True, False)
    totals = hlo_cost.collective_bytes(text, 8, slice_of)
    assert totals["dcn"] == pytest.approx(2 * 1 / 2 * 64)
    assert totals["total"] == pytest.approx(2 * 1 / 2 * 64 + 2 * 3 / 4 * 64)
    assert hlo_cost.collective_bytes(text, 8)["dcn"] == 0  # one slice: nothing crosses


def test_megascale_sends_are_the_cross_slice_collectives():
    """A multi-slice TPU program (compiled per slice) hands the cross-slice part of a reduction to the host."""
    text = """
ENTRY %main {
  %p0 = f32[16]{0} parameter(0)
  %p1 = f32[4]{0} parameter(1)
  %tok = token[] after-all()
  %ar = f32[16]{0} all-reduce(%p0), channel_id=1, replica_groups={{0,1,2,3}}, to_apply=%add
  %send = (f32[16]{0}, u32[], token[]) send(%ar, %tok), channel_id=2, is_host_transfer=true, frontend_attributes={_xla_megascale_transfer_type="ALL_REDUCE"}
  %send-done = token[] send-done(%send), channel_id=2, is_host_transfer=true
  %sendg = (f32[4]{0}, u32[], token[]) send(%p1, %tok), channel_id=3, is_host_transfer=true, frontend_attributes={_xla_megascale_transfer_type="ALL_GATHER"}
}
"""
    slice_of = [0] * 4 + [1] * 4 + [2] * 4 + [3] * 4  # four slices of four chips
    found = {c["name"]: c for c in hlo_cost.collectives(text, 4, slice_of)}
    assert found["ar"]["dcn"] is False and found["ar"]["bytes"] == pytest.approx(2 * 3 / 4 * 64)
    assert (found["send"]["op"], found["send"]["dcn"]) == ("all-reduce", True)
    assert found["send"]["bytes"] == pytest.approx(2 * 3 / 4 * 64)  # ring over the 4 slices
    assert found["sendg"]["bytes"] == pytest.approx(3 * 16)  # its part to each of the 3 other slices
    assert "send-done" not in found
    assert hlo_cost.collective_bytes(text, 4, slice_of)["dcn"] == pytest.approx(96 + 48)
