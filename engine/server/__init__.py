"""`run-graph serve`: ComfyUI's HTTP + WebSocket API over a Session.

- `store`: the queue and the history, in SQLite, so both outlive a restart;
- `worker`: one thread that runs queued prompts in order and turns engine events into
  ComfyUI's WebSocket messages;
- `app`: the aiohttp routes (bare and under /api/), the WebSocket hub and the safety middlewares.
No route holds engine logic: they translate HTTP into calls on the store and the worker.
"""
