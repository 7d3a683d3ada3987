"""The reference veloVI as the benchmarks call it: ``scvi.external.VELOVI`` (scvi-tools).

scvi-tools dropped velovi's ``get_permutation_scores``; :class:`ReferenceVELOVI` takes it (and
its helper ``_shuffle_layer_celltype``) unchanged from the ``velovi`` 0.3.x package when that
is installed, so every reference number comes from the reference's own code.
"""

from __future__ import annotations

import logging
import warnings

import numpy as np
from anndata import AnnData
from scvi.external import VELOVI

try:
    import velovi as _velovi
except ImportError:  # pragma: no cover - only the permutation benchmark needs it
    _velovi = None

warnings.filterwarnings("ignore")
for _name in ("scvi", "lightning", "lightning.pytorch", "pytorch_lightning"):
    logging.getLogger(_name).setLevel(logging.ERROR)

TRAINER_KWARGS = {"accelerator": "cpu", "devices": 1, "enable_progress_bar": False}


class ReferenceVELOVI(VELOVI):
    """``scvi.external.VELOVI`` plus velovi 0.3.x's ``get_permutation_scores`` (if installed)."""

    if _velovi is not None:
        get_permutation_scores = _velovi.VELOVI.get_permutation_scores
        _shuffle_layer_celltype = _velovi.VELOVI._shuffle_layer_celltype


def reference_model(adata: AnnData, seed: int) -> ReferenceVELOVI:
    """Register ``adata`` (layers Ms/Mu, as the reference tutorial) and build the model."""
    import scvi

    scvi.settings.seed = seed
    ReferenceVELOVI.setup_anndata(adata, spliced_layer="Ms", unspliced_layer="Mu")
    return ReferenceVELOVI(adata)


def train_reference(model: ReferenceVELOVI, max_epochs: int, early_stopping: bool) -> int:
    """``model.train`` with the reference defaults otherwise, on the CPU; returns epochs run."""
    model.train(max_epochs=max_epochs, early_stopping=early_stopping, **TRAINER_KWARGS)
    return len(model.history["elbo_train"])


def reference_posterior(model: ReferenceVELOVI, n_samples: int) -> dict[str, np.ndarray]:
    """The tutorial's posterior queries, each its own pass over the data (as the reference does).

    ``get_velocity`` and ``get_latent_time`` with ``n_samples``, ``get_expression_fit`` and
    ``get_state_assignment`` with their defaults (1 and 20 samples). Returns (N, G) arrays
    ``velocity``, ``fit_t``, ``fit_s``, ``fit_u`` and ``states`` (N, G, 4).
    """
    velocity = model.get_velocity(n_samples=n_samples, velo_statistic="mean")
    fit_t = model.get_latent_time(n_samples=n_samples)
    fit_s, fit_u = model.get_expression_fit()
    states, _ = model.get_state_assignment()
    return {
        "velocity": np.asarray(velocity),
        "fit_t": np.asarray(fit_t),
        "fit_s": np.asarray(fit_s),
        "fit_u": np.asarray(fit_u),
        "states": np.asarray(states),
    }
