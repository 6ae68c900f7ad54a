"""Running and saving a training run (see ARCHITECTURE.md).

The run (``trainer``, ``startup``), the mesh and logical-axis rules applied to it (``sharding``), the train
state (``state``), the optimizer and losses (``optim``, ``losses``), the jitted steps (``steps``, ``batching``,
``step_metrics``), what is logged (``metrics``, ``flops``, ``memory``, ``goodput``, ``profiling``) and Orbax
checkpoints (``checkpoint``, ``checkpoint_compat``, ``checkpoint_read``).
"""
