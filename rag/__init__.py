"""Question answering over news articles with exact, checked citations.

The public surface is listed in ``__all__``; importing the package loads no model.
"""

from rag.config import Settings
from rag.errors import RagError
from rag.pipeline import IngestReport, RagPipeline
from rag.types import Answer, Article, Chunk, Citation, GeneratedAnswer, Passage, SearchFilters

__all__ = [
    "Answer",
    "Article",
    "Chunk",
    "Citation",
    "GeneratedAnswer",
    "IngestReport",
    "Passage",
    "RagError",
    "RagPipeline",
    "SearchFilters",
    "Settings",
]

__version__ = "0.1.0"
