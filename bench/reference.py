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


def reference_extrinsic_futures(
    adata: AnnData, model: ReferenceVELOVI, n_samples: int, samples: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The tutorial's ``compute_extrinisic_uncertainty`` loop (reference notes §4.2).

    Per sample: ``get_velocity(n_samples=1)`` (or the given ``samples`` (S, N, G)),
    ``scv.tl.velocity_graph(sqrt_transform=False, approx=True)``, ``get_transition_matrix(
    self_transitions=True, use_negative_cosines=True)`` and T·Ms. Returns the velocity samples
    (S, N, G) and the future states (S, N, G), float32; the layers and graphs it adds to
    ``adata`` are removed again.
    """
    from scvelo.tools import velocity_graph
    from scvelo.utils import get_transition_matrix

    velocities, futures = [], []
    for i in range(n_samples if samples is None else len(samples)):
        vkey = f"velocities_velovi_{i}"
        if samples is None:
            v = np.asarray(model.get_velocity(n_samples=1, velo_statistic="mean"))
        else:
            v = np.asarray(samples[i])
        adata.layers[vkey] = v
        velocity_graph(adata, vkey=vkey, sqrt_transform=False, approx=True)
        transitions = get_transition_matrix(
            adata, vkey=vkey, self_transitions=True, use_negative_cosines=True
        )
        velocities.append(v.astype(np.float32))
        futures.append(np.asarray(transitions @ adata.layers["Ms"], dtype=np.float32))
        del adata.layers[vkey]
        for key in (f"{vkey}_graph", f"{vkey}_graph_neg", f"{vkey}_params"):
            adata.uns.pop(key, None)
        adata.obs.pop(f"{vkey}_self_transition")
    return np.stack(velocities), np.stack(futures)


def reference_directional_variance(vectors: np.ndarray) -> np.ndarray:
    """veloVI's own per-cell directional statistics of (S, N, G) vectors: the cosine variance
    (N,) (``_compute_directional_statistics_tensor``, its joblib loop over cells with
    ``n_jobs=-1``, as the tutorial calls it)."""
    from scvi.external.velovi._model import _compute_directional_statistics_tensor

    frame, _ = _compute_directional_statistics_tensor(vectors, n_jobs=-1, n_cells=vectors.shape[1])
    return frame["directional_cosine_sim_variance"].to_numpy()


def load_into_velodash(ref: dict, module) -> None:
    """Copy a trained reference module's weights (its ``module.state_dict()``) into a velodash
    ``core.model.VeloVAE`` of the same genes (in place), so both implementations' posterior
    draws can be compared on one trained model. The layouts differ only in names, the fused
    ρ/τ head, the state head's (gene, state) → (state, gene) order and the 3 unused
    likelihood-variance columns."""
    import torch

    n_genes = module.n_genes

    def trunk(ours: str, theirs: str) -> dict:
        keys = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
        linear = {f"{ours}.0.{k}": ref[f"{theirs}.fc_layers.Layer 0.0.{k}"] for k in keys[:2]}
        norm = {f"{ours}.1.{k}": ref[f"{theirs}.fc_layers.Layer 0.1.{k}"] for k in keys}
        return linear | norm

    def state_head(x: torch.Tensor) -> torch.Tensor:  # rows g·4 + k → k·G + g
        return x.reshape(n_genes, 4, -1).transpose(0, 1).reshape(4 * n_genes, *x.shape[1:])

    state = {
        **trunk("encoder", "z_encoder.encoder"),
        **trunk("time_trunk", "decoder.rho_first_decoder"),
        **trunk("state_trunk", "decoder.pi_first_decoder"),
        "z_mean.weight": ref["z_encoder.mean_encoder.weight"],
        "z_mean.bias": ref["z_encoder.mean_encoder.bias"],
        "z_var.weight": ref["z_encoder.var_encoder.weight"],
        "z_var.bias": ref["z_encoder.var_encoder.bias"],
        "state_head.weight": state_head(ref["decoder.px_pi_decoder.weight"]),
        "state_head.bias": state_head(ref["decoder.px_pi_decoder.bias"]),
        "switch_time_unconstr": ref["switch_time_unconstr"],
        "gamma_unconstr": ref["gamma_mean_unconstr"],
        "beta_unconstr": ref["beta_mean_unconstr"],
        "alpha_unconstr": ref["alpha_unconstr"],
        "var_unconstr": torch.stack(
            [ref["scale_unconstr"][:n_genes, 0], ref["scale_unconstr"][n_genes:, 0]]
        ),
        "u_switch": ref["switch_unspliced"],
        "s_switch": ref["switch_spliced"],
        "state_std_scale": module.state_std_scale,
    }
    for head in ("weight", "bias"):
        state[f"time_head.{head}"] = torch.cat(
            [ref[f"decoder.px_rho_decoder.0.{head}"], ref[f"decoder.px_tau_decoder.0.{head}"]]
        )
    module.load_state_dict(state)
    module.eval()
