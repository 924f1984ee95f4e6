"""Cloud sync: protocol shapes, request/command signing, the machine-side client and the
reference cloud (`sync.refcloud`). Imports only `edge.core` and aiohttp."""
