"""Request fields every API shape shares (the extensions no peer offers)."""
from __future__ import annotations

from typing import Literal

# The runtime's task names and the v2 aliases (edge_embed.manifest.TASKS, TASK_ALIASES)
Task = Literal["search_query", "search_document", "clustering", "classification", "query", "passage", "document"]
