"""Process rigs: the real daemon (`vendedge run`) and the reference cloud (`vendedge refcloud`) as
subprocesses, driven only through their public interfaces — the config file they read, their command
lines, and their HTTP APIs (docs/web-api.md, docs/protocols/sync.md). The simulated hardware runs
in the caller's process and loop (hw_sim's pty/socket/Modbus/camera servers).

Nothing here imports `edge` or `sync` (ARCHITECTURE.md: hw_sim uses the drivers' codecs only).
"""
