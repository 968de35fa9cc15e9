"""Answer generators: the protocol (``base``), the registry of the
``rag.generators`` entry-point group (``registry``) and the built-ins."""
