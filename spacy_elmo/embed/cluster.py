"""Embedding a corpus on a Dask cluster: one ``embed --shard I/N`` per worker, then ``embed-merge``.

Needs ``pip install 'spacy-elmo[cluster]'`` (``dask[distributed]``). Every worker must
read INPUT and the model and write beside OUTPUT under the same paths (a shared
filesystem); each loads its own biLM. A shard whose worker dies is retried and resumes
from its ``.partial`` directory, and calling the function again after a crash reuses the
shard files already finished::

    from dask.distributed import Client
    from spacy_elmo.embed.cluster import embed_with_dask

    with Client("tcp://scheduler:8786") as client:
        embed_with_dask("corpus.txt", "corpus.hdf5", client=client, weights="original")
"""

import dataclasses
import uuid
from pathlib import Path
from typing import Any, List, Optional

import torch

from ..files import PathLike
from .corpus import Shard
from .embedder import load_embedding_bilm
from .errors import EmbedSettingsError
from .merge import merge_shards
from .run import EmbedSettings, EmbedSummary, check_output, embed_corpus


def shard_path(output: Path, shard: Shard) -> Path:
    """Where shard ``I/N`` of OUTPUT is written: ``NAME.shard-I-of-N.SUFFIX`` beside it."""
    return output.with_name(f"{output.stem}.shard-{shard.index}-of-{shard.count}{output.suffix}")


def embed_shard(
    input_path: str,
    output_path: str,
    weights: str,
    options: Optional[str],
    settings: EmbedSettings,
    force: bool,
    threads: Optional[int],
) -> Optional[EmbedSummary]:
    """One shard, run inside a worker; a shard file finished earlier is kept (None) unless ``force``."""
    if Path(output_path).is_file() and not force:
        return None
    if threads is not None:
        torch.set_num_threads(threads)
    bilm = load_embedding_bilm(weights, options)
    return embed_corpus(input_path, output_path, bilm, settings, force=force, progress=False)


def embed_with_dask(
    input_path: PathLike,
    output_path: PathLike,
    *,
    client: Any = None,
    scheduler: Optional[str] = None,
    n_shards: Optional[int] = None,
    weights: str = "default",
    options: Optional[str] = None,
    settings: EmbedSettings = EmbedSettings(),
    threads_per_shard: Optional[int] = 1,
    retries: int = 2,
    force: bool = False,
    keep_shards: bool = False,
) -> List[Optional[EmbedSummary]]:
    """Embed ``input_path`` into ``output_path`` with ``n_shards`` shards (default: one per worker).

    ``client`` is a ``dask.distributed.Client``; without one, a client is opened on
    ``scheduler`` (an address), or on a new local cluster when that is None too. Returns
    each shard's :class:`EmbedSummary` (None for a shard file reused from an earlier call).
    The shard files are deleted after the merge unless ``keep_shards``.
    """
    try:
        from dask.distributed import Client
    except ImportError:
        raise EmbedSettingsError("Dask is not installed: pip install 'spacy-elmo[cluster]' (dask[distributed]).") from None
    input_path, output = Path(input_path).resolve(), Path(output_path).resolve()
    settings.validate()
    check_output(output, force)
    if settings.shard != Shard():
        raise EmbedSettingsError(
            f"settings.shard is {settings.shard}: embed_with_dask assigns the shards itself; leave it at 0/1."
        )
    own_client = client is None
    if own_client:
        client = Client(scheduler)
    try:
        workers = sorted(client.scheduler_info()["workers"])
        count = n_shards or len(workers)
        if count < 1:
            raise EmbedSettingsError(f"n_shards must be >= 1 (the cluster has {len(workers)} worker(s)).")
        shards = [Shard(index, count) for index in range(count)]
        run_id = uuid.uuid4().hex[:8]
        futures = [
            client.submit(
                embed_shard,
                str(input_path),
                str(shard_path(output, shard)),
                weights,
                options,
                dataclasses.replace(settings, shard=shard),
                force,
                threads_per_shard,
                key=f"spacy-elmo-embed-{shard.index}-of-{count}-{run_id}",
                workers=[workers[shard.index % len(workers)]] if workers else None,
                allow_other_workers=True,
                retries=retries,
                pure=False,
            )
            for shard in shards
        ]
        summaries = client.gather(futures)
    finally:
        if own_client:
            client.close()
    paths = [shard_path(output, shard) for shard in shards]
    merge_shards(output, paths, force=force)
    if not keep_shards:
        for path in paths:
            path.unlink()
    return summaries
