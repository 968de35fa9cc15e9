"""The ``openai`` generator: any server that speaks OpenAI's chat-completions
protocol (Ollama, vLLM, llama.cpp's server, LM Studio, OpenAI itself).

``RAG_OPENAI_BASE_URL``, ``RAG_OPENAI_MODEL``, ``RAG_OPENAI_API_KEY`` and
``RAG_OPENAI_TIMEOUT`` say where and how. A server that cannot be reached (or
times out) raises :class:`GeneratorUnavailableError` (HTTP 503 from our API); one
that answers with an error or with something that is not a chat completion
raises :class:`GeneratorFailedError` (HTTP 502).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, NoReturn

from rag.errors import GeneratorFailedError, GeneratorUnavailableError
from rag.generators.base import GeneratorContext
from rag.generators.llm import ChatGenerator, Message


class OpenAIGenerator(ChatGenerator):
    name = "openai"

    def __init__(self, context: GeneratorContext):
        super().__init__(context)
        import openai

        s = self.settings
        self.model = s.openai_model
        self.base_url = s.openai_base_url
        self.client = openai.OpenAI(
            base_url=s.openai_base_url,
            api_key=s.openai_api_key.get_secret_value(),
            timeout=s.openai_timeout,
            max_retries=1,
        )

    def _request(self, messages: list[Message]) -> dict[str, Any]:
        s = self.settings
        return {"model": self.model, "messages": messages, "max_tokens": s.llm_max_tokens,
                "temperature": s.llm_temperature}

    def chat(self, messages: list[Message]) -> str:
        try:
            reply = self.client.chat.completions.create(**self._request(messages))
        except Exception as exc:
            self._fail(exc)
        try:
            content = reply.choices[0].message.content
        except (AttributeError, IndexError, TypeError) as exc:
            raise GeneratorFailedError(f"{self.base_url} did not answer with a chat completion") from exc
        if not isinstance(content, str):
            raise GeneratorFailedError(f"{self.base_url} answered without any text")
        return content

    def chat_stream(self, messages: list[Message]) -> Iterator[str]:
        try:
            stream = self.client.chat.completions.create(**self._request(messages), stream=True)
            with stream:
                for chunk in stream:
                    choices = getattr(chunk, "choices", None)
                    if not choices:  # usage-only and keep-alive chunks carry no text
                        continue
                    text = getattr(choices[0].delta, "content", None)
                    if text:
                        yield text
        except GeneratorFailedError:
            raise
        except Exception as exc:
            self._fail(exc)

    def _fail(self, exc: Exception) -> NoReturn:
        import openai

        where = f"the OpenAI-compatible server at {self.base_url}"
        if isinstance(exc, openai.APITimeoutError):
            timeout = self.settings.openai_timeout
            raise GeneratorUnavailableError(f"{where} did not answer within {timeout:g} s") from exc
        if isinstance(exc, openai.APIConnectionError):
            raise GeneratorUnavailableError(f"{where} cannot be reached") from exc
        if isinstance(exc, openai.APIStatusError):
            raise GeneratorFailedError(
                f"{where} answered HTTP {exc.status_code}: {_short(exc.message)}"
            ) from exc
        raise GeneratorFailedError(f"{where} sent a reply that is not a chat completion: {_short(str(exc))}") from exc


def _short(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
