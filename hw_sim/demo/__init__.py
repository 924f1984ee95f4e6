"""`vendedge demo` (`python -m hw_sim.demo`): the simulated hardware in this process, the real daemon
and reference cloud as subprocesses, driven through their public interfaces only.

Scenarios print one JSON summary as the last line with `--json`; they exit 0 only when the daemon's
ledger (its audit read model) and the simulator agree.
"""
