"""Dependencies shared by the routes."""

from __future__ import annotations

from fastapi import Request

from rag.pipeline import RagPipeline


def get_pipeline(request: Request) -> RagPipeline:
    pipeline: RagPipeline = request.app.state.pipeline
    return pipeline
