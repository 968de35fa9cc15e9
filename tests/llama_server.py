"""A real OpenAI-compatible server for tests: llama.cpp's server (through xllamacpp)
running the packaged GGUF model on 127.0.0.1.

Run as ``python tests/llama_server.py API_KEY``: it prints its base URL (ending in
``/v1``) on one line once the model is loaded, and serves until its stdin closes.
"""

from __future__ import annotations

import sys

import xllamacpp

from rag.generators.local import packaged_model


def main() -> int:
    params = xllamacpp.CommonParams()
    params.model.path = str(packaged_model())
    params.n_ctx = 4096
    params.n_parallel = 1
    params.cpuparams.n_threads = params.cpuparams_batch.n_threads = 2
    params.verbosity = -1
    params.api_keys = [sys.argv[1]]
    server = xllamacpp.Server(params)
    print(f"{server.listening_address}/v1", flush=True)
    sys.stdin.read()  # until the test closes the pipe
    return 0


if __name__ == "__main__":
    sys.exit(main())
