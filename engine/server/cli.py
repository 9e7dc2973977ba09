"""`run-graph serve`: ComfyUI's API on loopback by default; any other address needs a token."""
from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Sequence

log = logging.getLogger("run_graph.server")


def serve(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="run-graph serve", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8188)
    parser.add_argument("--models-dir", type=Path, default=None)
    parser.add_argument("--output-dir", type=Path, default=Path("output"))
    parser.add_argument("--input-dir", type=Path, default=Path("input"))
    parser.add_argument("--state-dir", type=Path, default=None,
                        help="where the queue and history persist (default: the output folder)")
    parser.add_argument("--cache-dir", type=Path, default=None)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--auth-token", default=None, help="require `Authorization: Bearer TOKEN` or ?token=")
    parser.add_argument("--no-auth", action="store_true", help="serve a non-loopback address without a token")
    parser.add_argument("--max-upload-size", type=float, default=100,
                        help="largest request body in MB, uploads included (ComfyUI's default: 100)")
    parser.add_argument("--allow-absolute-model-paths", action="store_true",
                        help="let prompts read model files outside the models folders")
    args = parser.parse_args(argv)
    from .app import _is_loopback

    if not _is_loopback(args.host) and args.auth_token is None and not args.no_auth:
        log.error("run-graph serve: --host %s is reachable from other machines; give --auth-token, "
                  "or --no-auth to serve it open", args.host)
        return 2
    if args.no_auth and not _is_loopback(args.host):
        log.warning("serving %s without authentication: anyone who can reach it can run prompts", args.host)
    from aiohttp import web

    from ..registry import default_registry
    from ..session import Session
    from ..settings import Settings
    from .app import create_app

    optional = {k: v for k, v in (("models_dir", args.models_dir), ("cache_dir", args.cache_dir)) if v is not None}
    settings = Settings(output_dir=args.output_dir, input_dir=args.input_dir, device=args.device,
                        allow_absolute_model_paths=args.allow_absolute_model_paths, **optional)
    state = (args.state_dir or args.output_dir) / "run-graph-server.sqlite"
    app = create_app(Session(default_registry(), settings), state, token=args.auth_token,
                     max_upload_bytes=int(args.max_upload_size * 2**20))
    _keep_the_loop_responsive()
    log.info("run-graph serve: http://%s:%d (queue and history in %s)", args.host, args.port, state)
    web.run_app(app, host=args.host, port=args.port, print=None)
    return 0


def _keep_the_loop_responsive() -> None:
    """This process serves requests while its worker thread runs jobs: the GIL changes hands
    every millisecond (not 5), and one core stays out of torch's thread pool, so a POST answers
    in milliseconds instead of waiting on a busy sampler."""
    import os
    import sys

    sys.setswitchinterval(0.001)
    try:
        import torch
    except ImportError:
        return
    torch.set_num_threads(max(1, (os.cpu_count() or 2) - 1))
