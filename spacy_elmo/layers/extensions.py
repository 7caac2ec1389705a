"""The Doc attribute the ``elmo`` component writes, registered when a component or listener
is built (not on import), through spaCy's extension mechanism."""

from spacy.tokens import Doc

LAYERS_ATTR = "elmo_layers"


def install_extensions() -> None:
    """Register ``doc._.elmo_layers`` (float32 ``(L+1, len(doc), 2P)``, None until set); idempotent."""
    if not Doc.has_extension(LAYERS_ATTR):
        Doc.set_extension(LAYERS_ATTR, default=None)
