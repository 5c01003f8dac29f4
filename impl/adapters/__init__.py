"""Adapters that plug the planners into other libraries (spec/control.md, CTL-18, CTL-19).

Each adapter lives in its own module and imports its library only there, so
``import impl`` never needs them; install the matching extra first:

- ``impl.adapters.torchrl_planner``: ``DCEMPlanner``, a TorchRL
  ``MPCPlannerBase`` (extra ``torchrl``).
- ``impl.adapters.mbrl_optimizer``: ``DCEMOptimizer``, an mbrl-lib
  ``Optimizer`` that ``TrajectoryOptimizer`` can drive (extra ``mbrl``, then
  ``pip install --no-deps mbrl==0.2.0``: mbrl-lib's own pins do not import on
  Python 3.11).
"""
