"""Baselines for the detector's throughput benchmark.

Each runs the very same pure rules as the worker (``decode_event``, ``load_state``, ``step``)
in the simplest way a given stack allows, so the real worker's figure can be reported as a
ratio to them, measured in the same benchmark run:

- :mod:`fanpin.baselines.faust_table`: a plain Faust agent with a per-household ``Table``,
  one message per event (its own process, configured from the environment);
- :mod:`fanpin.baselines.raw_aiokafka`: an aiokafka consumer with an in-memory state dict,
  no durability (the ceiling);
- :mod:`fanpin.baselines.measure`: reads a consumer group's progress from its committed
  offsets, and turns it into a steady-state rate.
"""
