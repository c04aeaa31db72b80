"""Adapters that plug an edge-embed bundle into other frameworks, one small module per framework.

The runtime never imports this package; each module needs its framework's optional extra:
``langchain`` (langchain-core), ``llama-index`` (llama-index-core), ``chroma`` (chromadb).
Queries get the bundle's ``search_query`` prefix and documents its ``search_document`` prefix.
"""
