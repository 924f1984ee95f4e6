"""In-process test rigs: the simulators (hw_sim) and the real daemon (edge) in the test's own loop.

They live here, not in `edge`, because `edge` never imports `hw_sim`; tests may import both.
`vend` (board + daemon), `fridge` (Modbus plant on a simulated clock), `takeandgo` (plant + shelf
cameras + a scripted shopper), `cloud` (the reference cloud with the machine registered).
"""
