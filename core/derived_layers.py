"""Layers a results file leaves out because the slots it keeps rebuild them exactly.

Each :class:`DerivedLayer` says which slots rebuild it and rebuilds any block of its genes:

- ``velocity_baseline`` of the steady-state baseline: scVelo's ``Mu − γ·Ms`` from the layers
  ``Ms``, ``Mu`` and the per-gene ``var['baseline_gamma']`` (the dynamical baseline is stored);
- ``true_velocity`` of a simulation: the closed forms of its ground truth
  (:func:`core.simulation_truth.true_velocity`);
- ``state_assignment`` of a file written before it was stored: the argmax of the four state
  planes ``state_<name>`` such a file holds.

A fit drops a derived layer only where its rebuild equals it bit for bit, checked a block of
genes at a time (:func:`drop_rebuildable`). Readers rebuild it on demand: ``read_results``
whole, the dashboard's store a gene or a block of genes at a time. Numpy only, so a web process
can rebuild.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

import anndata as ad
import numpy as np

from core import simulation_truth
from core.blocks import blocks_within

Genes = slice | Sequence[int] | np.ndarray
#: The four posterior states, in the order of ``layers['state_assignment']``'s codes.
STATE_NAMES = ("induction", "induction_steady", "repression", "repression_steady")
#: The layer of each cell's and gene's most probable state (int8 codes into STATE_NAMES).
STATE_ASSIGNMENT = "state_assignment"
#: The four probability planes of files written before ``state_assignment`` was stored.
STATE_PLANES = tuple(f"state_{name}" for name in STATE_NAMES)
#: Cells × genes of one block when a derived layer is checked or rebuilt whole.
_BLOCK_ELEMENTS = 2**23


class LayerSource(Protocol):
    """What a rebuild reads: the names of the layers present, their columns, and the small
    slots (obs, var, varm, uns) of ``adata``."""

    adata: ad.AnnData

    @property
    def layer_names(self) -> Collection[str]: ...

    def columns(self, key: str, genes: Genes) -> np.ndarray: ...


@dataclass(frozen=True)
class DerivedLayer:
    """A layer rebuilt from other slots: ``available(source)`` says whether ``source`` holds
    them, ``rebuild(source, genes)`` returns the layer's (N, k) values of ``genes``."""

    name: str
    available: Callable[[LayerSource], bool]
    rebuild: Callable[[LayerSource, Genes], np.ndarray]


def _baseline_available(source: LayerSource) -> bool:
    adata = source.adata
    mode = adata.uns.get("velodash", {}).get("baseline", {}).get("mode")
    layers = source.layer_names
    return mode == "steady_state" and "baseline_gamma" in adata.var and {"Ms", "Mu"} <= set(layers)


def _baseline(source: LayerSource, genes: Genes) -> np.ndarray:
    """scVelo's steady-state velocity ``Mu − γ·Ms`` (``Velocity.compute_deterministic``, no
    offset), in the dtype of its γ, as float32."""
    gamma = source.adata.var["baseline_gamma"].to_numpy()[genes]
    ms, mu = source.columns("Ms", genes), source.columns("Mu", genes)
    return np.asarray(mu - gamma * ms, dtype=np.float32)


def _states_available(source: LayerSource) -> bool:
    return set(STATE_PLANES) <= set(source.layer_names)


def _state_assignment(source: LayerSource, genes: Genes) -> np.ndarray:
    planes = np.stack([source.columns(key, genes) for key in STATE_PLANES])
    return planes.argmax(axis=0).astype(np.int8)


DERIVED: dict[str, DerivedLayer] = {
    layer.name: layer
    for layer in (
        DerivedLayer("velocity_baseline", _baseline_available, _baseline),
        DerivedLayer(
            "true_velocity",
            lambda source: simulation_truth.has_truth(source.adata),
            lambda source, genes: simulation_truth.true_velocity(source.adata, genes),
        ),
        DerivedLayer(STATE_ASSIGNMENT, _states_available, _state_assignment),
    )
}
"""Every derived layer, by name."""


class AnnDataSource:
    """:class:`LayerSource` over an AnnData in memory (its dense or sparse layers)."""

    def __init__(self, adata: ad.AnnData) -> None:
        """Read ``adata``'s layers."""
        self.adata = adata

    @property
    def layer_names(self) -> Collection[str]:
        """The layers ``adata`` holds."""
        return self.adata.layers.keys()

    def columns(self, key: str, genes: Genes) -> np.ndarray:
        """(N, k) values of ``layers[key]`` for ``genes``, dense, in the layer's dtype."""
        block = self.adata.layers[key][:, genes]
        return block.toarray() if hasattr(block, "toarray") else np.asarray(block)


def gene_blocks_of(n_cells: int, n_genes: int) -> Iterator[slice]:
    """Blocks of genes whose (N, g) rebuilds stay about 32 MiB (float32)."""
    return blocks_within(n_genes, n_cells, _BLOCK_ELEMENTS)


def rebuilds_exactly(source: LayerSource, name: str, stored: np.ndarray) -> bool:
    """Whether derived layer ``name`` rebuilds from ``source`` equal to ``stored`` (N, G), bit
    for bit (NaN where ``stored`` is NaN), checked a block of genes at a time."""
    layer = DERIVED[name]
    if not layer.available(source):
        return False
    n_cells, n_genes = stored.shape
    return all(
        np.array_equal(layer.rebuild(source, genes), stored[:, genes], equal_nan=True)
        for genes in gene_blocks_of(n_cells, n_genes)
    )


def rebuildable(adata: ad.AnnData, names: Collection[str] | None = None) -> list[str]:
    """The dense derived layers of ``adata`` (those in ``names``, default all) that rebuild
    exactly from its other slots (:func:`rebuilds_exactly`): what a results file leaves out."""
    source = AnnDataSource(adata)
    wanted = DERIVED if names is None else [name for name in names if name in DERIVED]
    return [
        name
        for name in wanted
        if isinstance(values := adata.layers.get(name), np.ndarray)
        and values.ndim == 2
        and rebuilds_exactly(source, name, values)
    ]


def drop_rebuildable(adata: ad.AnnData, names: Collection[str] | None = None) -> list[str]:
    """Remove (in place) the layers :func:`rebuildable` finds and return their names: a fit
    then no longer holds them in memory."""
    dropped = rebuildable(adata, names)
    for name in dropped:
        del adata.layers[name]
    return dropped


def restore(adata: ad.AnnData) -> list[str]:
    """Add (in place) every derived layer ``adata`` lacks and can rebuild; returns their names."""
    source = AnnDataSource(adata)
    added = []
    for name, layer in DERIVED.items():
        if name not in adata.layers and layer.available(source):
            parts = [layer.rebuild(source, genes) for genes in gene_blocks_of(*adata.shape)]
            adata.layers[name] = np.concatenate(parts, axis=1) if parts else np.empty(adata.shape)
            added.append(name)
    return added
