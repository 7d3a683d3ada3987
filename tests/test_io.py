"""core.io: reading, validation messages, group detection, fingerprints, atomic writes."""

from __future__ import annotations

import hashlib

import anndata as ad
import h5py
import loompy
import numpy as np
import pandas as pd
import pytest
from scipy import sparse

from core.io import (
    DatasetError,
    detect_groupby,
    file_fingerprint,
    read_dataset,
    validate_counts,
    write_h5ad_atomic,
)


def _counts(n_cells: int = 6, n_genes: int = 4, seed: int = 0) -> ad.AnnData:
    rng = np.random.default_rng(seed)
    spliced = rng.poisson(3.0, (n_cells, n_genes)).astype(np.float32)
    unspliced = rng.poisson(1.0, (n_cells, n_genes)).astype(np.float32)
    return ad.AnnData(
        X=spliced.copy(),
        obs=pd.DataFrame(
            {"leiden": pd.Categorical(["0", "1"] * (n_cells // 2))},
            index=[f"c{i}" for i in range(n_cells)],
        ),
        var=pd.DataFrame(index=[f"g{j}" for j in range(n_genes)]),
        layers={"spliced": sparse.csr_matrix(spliced), "unspliced": unspliced},
    )


def test_read_h5ad_roundtrip(tmp_path):
    adata = _counts()
    path = write_h5ad_atomic(adata, tmp_path / "data.h5ad")
    back = read_dataset(path)
    np.testing.assert_array_equal(back.layers["spliced"].toarray(), adata.X)
    np.testing.assert_array_equal(back.layers["unspliced"], adata.layers["unspliced"])
    assert back.obs["leiden"].dtype == "category"


def test_read_loom_maps_velocyto_layers(tmp_path):
    adata = _counts()
    spliced = adata.X
    unspliced = adata.layers["unspliced"]
    path = tmp_path / "velocyto.loom"
    loompy.create(
        str(path),
        {"": spliced.T, "spliced": spliced.T, "unspliced": unspliced.T},
        {"Gene": np.asarray(adata.var_names)},
        {"CellID": np.asarray(adata.obs_names)},
    )
    back = read_dataset(path)
    assert list(back.obs_names) == list(adata.obs_names)
    assert list(back.var_names) == list(adata.var_names)
    np.testing.assert_array_equal(back.layers["spliced"].toarray(), spliced)
    np.testing.assert_array_equal(back.layers["unspliced"].toarray(), unspliced)
    validate_counts(back)


@pytest.mark.filterwarnings("ignore:Element .* without encoding metadata")
def test_read_errors(tmp_path):
    with pytest.raises(DatasetError, match="not found"):
        read_dataset(tmp_path / "missing.h5ad")
    csv = tmp_path / "counts.csv"
    csv.write_text("a,b\n1,2\n")
    with pytest.raises(DatasetError, match=r"\.h5ad, \.loom"):
        read_dataset(csv)
    fake = tmp_path / "fake.h5ad"
    fake.write_text("this is not an HDF5 file\n")
    with pytest.raises(DatasetError, match="corrupt"):
        read_dataset(fake)
    with h5py.File(tmp_path / "other.h5ad", "w") as handle:
        handle["weights"] = np.arange(3)
    with pytest.raises(DatasetError, match="not an AnnData"):
        read_dataset(tmp_path / "other.h5ad")
    h5py.File(tmp_path / "empty.h5ad", "w").close()
    with pytest.raises(DatasetError, match="empty"):
        read_dataset(tmp_path / "empty.h5ad")
    with pytest.raises(DatasetError, match="folder"):
        read_dataset(tmp_path)


def test_missing_layers_message_names_existing_layers_and_tools():
    adata = _counts()
    del adata.layers["unspliced"]
    adata.layers["counts"] = adata.X.copy()
    with pytest.raises(DatasetError) as info:
        validate_counts(adata)
    message = str(info.value)
    assert "'unspliced'" in message
    assert "'spliced', 'counts'" in message
    assert "velocyto" in message and "STARsolo" in message


@pytest.mark.parametrize("as_sparse", [False, True])
@pytest.mark.parametrize(
    ("bad", "word"), [(-1.0, "negative"), (np.nan, "NaN"), (np.inf, "infinite")]
)
def test_invalid_values_report_count_and_layer(as_sparse, bad, word):
    adata = _counts()
    unspliced = adata.layers["unspliced"].copy()
    unspliced[[0, 3], [1, 2]] = bad
    adata.layers["unspliced"] = sparse.csr_matrix(unspliced) if as_sparse else unspliced
    with pytest.raises(DatasetError, match=rf"Layer 'unspliced' contains 2 {word}"):
        validate_counts(adata)


def test_valid_counts_pass():
    validate_counts(_counts())


def test_detect_groupby():
    adata = _counts()
    assert detect_groupby(adata) == "leiden"
    adata.obs["clusters"] = adata.obs["leiden"]
    assert detect_groupby(adata) == "clusters"  # earlier in the preference order
    assert detect_groupby(adata, "leiden") == "leiden"
    adata.obs["depth"] = 1.0
    with pytest.raises(DatasetError) as info:
        detect_groupby(adata, "celltype")
    assert "leiden, clusters" in str(info.value)
    assert "depth" not in str(info.value)
    bare = _counts()
    del bare.obs["leiden"]
    assert detect_groupby(bare) is None


def test_file_fingerprint_streams_whole_file(tmp_path):
    path = tmp_path / "blob.bin"
    payload = np.random.default_rng(0).bytes(3 * (1 << 20) + 17)  # spans several chunks
    path.write_bytes(payload)
    assert file_fingerprint(path) == hashlib.sha256(payload).hexdigest()
    path.write_bytes(payload[:-1] + b"\x00")
    assert file_fingerprint(path) != hashlib.sha256(payload).hexdigest()


def test_write_atomic_compressed_and_cleans_up_on_failure(tmp_path):
    target = tmp_path / "out" / "results.h5ad"
    write_h5ad_atomic(_counts(), target, compression="gzip")
    before = target.read_bytes()
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    assert target.stat().st_mode & 0o777 == plain.stat().st_mode & 0o777  # umask, not 0600
    broken = _counts()
    broken.uns["unwritable"] = object()  # h5ad cannot store arbitrary objects
    with pytest.raises(Exception, match="object"):
        write_h5ad_atomic(broken, target)
    assert target.read_bytes() == before  # the old file survives
    assert [p.name for p in target.parent.iterdir()] == ["results.h5ad"]  # no temp left
