"""`edge-embed serve`: an embedding server speaking the OpenAI, Ollama, TEI and Nomic APIs, with one
batching worker per model. Needs the [server] extra (fastapi, uvicorn, prometheus-client); the core
runtime never imports this package."""
