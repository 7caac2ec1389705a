"""Scale-out of corpus embedding on Dask: shards on a local 2-worker cluster merge to the single-process file."""

import json
import random

import h5py
import numpy as np
import pytest

from spacy_elmo.embed import EmbedSettings, EmbedWarning, embed_corpus, load_embedding_bilm

distributed = pytest.importorskip(
    "dask.distributed", reason="Dask is not installed (pip install 'spacy-elmo[cluster]' to run the cluster recipe test)"
)

WORDS = "the a river bank money city sat ran said old new small . , London Paris John Mary 1990".split()


@pytest.mark.slow
def test_dask_shards_merge_to_the_single_process_file(tiny_model, tmp_path):
    from spacy_elmo.embed.cluster import embed_with_dask

    rng = random.Random(11)
    lines = [" ".join(rng.choices(WORDS, k=rng.randint(0, 18))) for _ in range(80)]
    source = tmp_path / "corpus.txt"
    source.write_text("\n".join(lines) + "\n", encoding="utf-8")
    settings = EmbedSettings(output_format="all", chunk_lines=16)
    single = tmp_path / "single.hdf5"
    with pytest.warns(EmbedWarning, match="empty line"):
        embed_corpus(source, single, load_embedding_bilm(str(tiny_model[1])), settings, progress=False)

    out = tmp_path / "cluster.hdf5"
    with (
        distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster,
        distributed.Client(cluster) as client,
        distributed.get_task_stream(client) as tasks,
    ):
        summaries = embed_with_dask(source, out, client=client, weights=str(tiny_model[1]), settings=settings)

    assert len({task["worker"] for task in tasks.data}) == 2, "each worker should run one shard"
    assert [s.n_shard_lines for s in summaries] == [40, 40]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["cluster.hdf5", "corpus.txt", "single.hdf5"]
    with h5py.File(single, "r") as a, h5py.File(out, "r") as b:
        assert sorted(a.keys()) == sorted(b.keys())
        assert a["sentence_to_index"][0] == b["sentence_to_index"][0]
        for key in a:
            if key.isdigit():
                assert a[key].shape == b[key].shape
                # Each shard's batches hold other lines than the single run's: equal up to float rounding.
                np.testing.assert_allclose(a[key][()], b[key][()], rtol=1e-5, atol=1e-6, err_msg=key)
        assert json.loads(b.attrs["spacy_elmo_embed"])["merged_shards"] == 2
