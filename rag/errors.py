"""The one exception tree of the library.

Every error a user can cause derives from :class:`RagError` and carries a
message fit to show as is. The edges translate them in one place each:
``api/app.py`` maps them to HTTP status codes through ``http_status`` and
``rag/cli.py`` prints the message and exits non-zero.

    RagError
    ├── ConfigError            settings that cannot work (bad path, bad value)      400
    ├── InvalidRequestError    a request the library refuses (empty question, k<1)   422
    ├── CorpusError            an input file or record that cannot be read           422
    ├── DocumentNotFoundError  an unknown document id                                404
    ├── UnknownGeneratorError  a generator name that no plugin provides              422
    ├── GeneratorUnavailableError  the LLM (server or model file) cannot be reached  503
    ├── GeneratorFailedError   the LLM answered with an error or garbage             502
    ├── IndexNotFoundError     no index has been built at the configured place       503
    ├── IndexBusyError         another process holds the write lock                 503
    ├── IndexMismatchError     the index was built with other model/chunk settings   409
    └── IndexCorruptError      index files that are missing or inconsistent          500
"""

from __future__ import annotations


class RagError(Exception):
    """Base class; ``str(err)`` is a message for people."""

    http_status = 500


class ConfigError(RagError):
    http_status = 400


class InvalidRequestError(RagError):
    http_status = 422


class CorpusError(RagError):
    http_status = 422


class DocumentNotFoundError(RagError):
    http_status = 404


class UnknownGeneratorError(RagError):
    http_status = 422


class GeneratorUnavailableError(RagError):
    http_status = 503


class GeneratorFailedError(RagError):
    http_status = 502


class IndexNotFoundError(RagError):
    http_status = 503


class IndexBusyError(RagError):
    http_status = 503


class IndexMismatchError(RagError):
    http_status = 409


class IndexCorruptError(RagError):
    http_status = 500
