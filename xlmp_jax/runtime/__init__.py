"""What a program runs on and survives: the lowest room, importing nothing else of ``xlmp_jax``.

The platform and its devices (``platforms``: no libtpu probe without a TPU; ``tpu_topology``: Cloud TPU slices
as compile-only devices; ``hlo_cost``: what a compiled program sends and multiplies), JAX's persistent cache
(``compile_cache``), a readable console (``console``), stopping cleanly on SIGTERM (``preemption``), fault
injection for tests (``faults``), one run per work directory (``lease``, ``lease_store``) and TensorBoard
event files without TensorFlow (``summary_writer``). See ARCHITECTURE.md.
"""
