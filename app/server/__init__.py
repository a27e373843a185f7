"""The HTTP server around the app: connection limits uvicorn lacks, and the descriptor limit they rest on."""
