"""Embedding whole corpora into AllenNLP's HDF5 layout (``python -m spacy_elmo embed``),
merging shard files (``embed-merge``), and running shards on a Dask cluster (:mod:`.cluster`)."""

from .corpus import Shard
from .embedder import load_embedding_bilm
from .errors import EmbedInputError, EmbedMergeError, EmbedOutputError, EmbedResumeError, EmbedSettingsError, EmbedWarning
from .merge import merge_shards
from .run import EmbedSettings, EmbedSummary, embed_corpus

__all__ = [
    "EmbedInputError",
    "EmbedMergeError",
    "EmbedOutputError",
    "EmbedResumeError",
    "EmbedSettings",
    "EmbedSettingsError",
    "EmbedSummary",
    "EmbedWarning",
    "Shard",
    "embed_corpus",
    "load_embedding_bilm",
    "merge_shards",
]
