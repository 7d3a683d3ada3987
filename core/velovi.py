"""User-facing veloVI model (the equivalent of scvi-tools' ``VELOVI``) on numpy moments."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np
import torch

from core.model import ModelConfig, VeloVAE, switch_targets
from core.options import DEVICES, TIME_STATISTICS
from core.posterior import (
    Posterior,
    expression_fit,
    posterior_pass,
    velocity_sample_chunks,
)
from core.row_spill import RowSpill
from core.train import EpochReport, History, TrainConfig, train

__all__ = ["ModelConfig", "TrainConfig", "VeloVI", "resolve_device"]


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """'auto' → CUDA when available, else CPU; 'cpu'/'cuda' (or a torch.device) as given."""
    if isinstance(device, torch.device):
        requested = device
    elif device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    elif isinstance(device, str) and device.split(":")[0] in DEVICES[1:]:
        requested = torch.device(device)
    else:
        raise ValueError(f"device must be one of {', '.join(DEVICES)}, got {device!r}.")
    if requested.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            "device='cuda' was requested but this torch build sees no CUDA GPU; "
            "use device='cpu' or 'auto'."
        )
    return requested


def _check_moments(spliced: np.ndarray, unspliced: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """float32 copies of (N, G) finite, equally shaped moment matrices."""
    s = np.asarray(spliced, dtype=np.float32)
    u = np.asarray(unspliced, dtype=np.float32)
    if s.ndim != 2 or s.shape != u.shape:
        raise ValueError(
            f"spliced {s.shape} and unspliced {u.shape} must be 2-D (cells, genes) of equal shape."
        )
    if s.shape[0] < 2 or s.shape[1] < 1:
        raise ValueError(f"need at least 2 cells and 1 gene, got {s.shape}.")
    if not (np.isfinite(s).all() and np.isfinite(u).all()):
        raise ValueError("spliced/unspliced contain NaN or inf; fill or drop those genes first.")
    return s, u


class VeloVI:
    """veloVI on min-max scaled moments ``spliced`` = Ms and ``unspliced`` = Mu, each (N, G).

    ``seed`` fixes the switch-time initialisation, the network initialisation, the data split,
    the minibatch order and every posterior draw, so a CPU fit is bit-for-bit reproducible.
    Initialisation and training run inside ``torch.random.fork_rng``; queries draw from their
    own seeded ``torch.Generator``; the global RNG is left untouched.
    """

    def __init__(
        self,
        spliced: np.ndarray,
        unspliced: np.ndarray,
        model_config: ModelConfig | None = None,
        device: str | torch.device = "auto",
        seed: int = 0,
    ) -> None:
        self.spliced, self.unspliced = _check_moments(spliced, unspliced)
        self.device = resolve_device(device)
        self.config = model_config or ModelConfig()
        self.seed = seed
        self.history: History | None = None
        with self._seeded(0):
            self.module = VeloVAE(
                *switch_targets(self.spliced, self.unspliced), self.config, seed=seed
            ).to(self.device)
        self.module.eval()

    @contextmanager
    def _seeded(self, stream: int) -> Iterator[None]:
        """Fork the global RNG and seed it (``stream`` separates init, training and queries)."""
        cuda = [self.device.index or 0] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=cuda):
            torch.manual_seed(self.seed * 1_000_003 + stream)
            yield

    def _generator(self, stream: int) -> torch.Generator:
        """A fresh generator on the model's device for query ``stream`` (same seed → same draws)."""
        return torch.Generator(device=self.device).manual_seed(self.seed * 1_000_003 + stream)

    def train(
        self,
        config: TrainConfig | None = None,
        progress: Callable[[EpochReport], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> History:
        """Fit the model (see :func:`core.train.train`); returns and keeps the ELBO history."""
        with self._seeded(1):
            self.history = train(
                self.module,
                self.spliced,
                self.unspliced,
                config,
                self.device,
                progress,
                should_stop,
            )
        return self.history

    def _tensors(
        self, spliced: np.ndarray | None, unspliced: np.ndarray | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Device tensors of the given (N, G) moments, or of the training data when None."""
        if spliced is None and unspliced is None:
            spliced, unspliced = self.spliced, self.unspliced
        elif spliced is None or unspliced is None:
            raise ValueError("pass both spliced and unspliced, or neither (training data).")
        s, u = _check_moments(spliced, unspliced)
        if s.shape[1] != self.module.n_genes:
            raise ValueError(
                f"model was fitted on {self.module.n_genes} genes, got {s.shape[1]}; "
                "pass the same genes in the same order."
            )
        return torch.from_numpy(s).to(self.device), torch.from_numpy(u).to(self.device)

    def posterior(
        self,
        n_samples: int = 25,
        mode: str = "rao-blackwell",
        time_statistic: str = TIME_STATISTICS[0],
        spliced: np.ndarray | None = None,
        unspliced: np.ndarray | None = None,
        scaling: np.ndarray | None = None,
        spill: RowSpill | None = None,
    ) -> Posterior:
        """All posterior summaries in one batched pass (see :mod:`core.posterior`), of the
        training cells, or of new cells given as ``spliced``/``unspliced`` moments (N', G) of
        the same genes, min-max scaled with the training cells' per-gene minimum and maximum
        (not their own); ``scaling`` (G,) fixes the per-gene rescaling (pass the training
        posterior's ``scaling`` to put new cells in its units; None: from the cells passed).
        ``spill``: write the (N, G) summaries but the velocity to disk as they are made
        (:func:`core.posterior.posterior_pass`)."""
        factor = None if scaling is None else torch.as_tensor(scaling, dtype=torch.float32)
        return posterior_pass(
            self.module,
            *self._tensors(spliced, unspliced),
            n_samples,
            mode,
            self._generator(2),
            time_statistic,
            None if factor is None else factor.to(self.device),
            spill,
        )

    def velocity_samples(
        self,
        n_samples: int,
        spliced: np.ndarray | None = None,
        unspliced: np.ndarray | None = None,
    ) -> torch.Tensor:
        """(S, N, G) joint (z, π) velocity draws on the device, clipped like
        ``Posterior.velocity`` but in model units, as the reference's ``get_velocity`` draws
        (see :func:`core.posterior.velocity_sample_chunks`)."""
        return torch.cat(
            [chunk for _, chunk in self.velocity_sample_chunks(n_samples, spliced, unspliced)],
            dim=1,
        )

    def velocity_sample_chunks(
        self,
        n_samples: int,
        spliced: np.ndarray | None = None,
        unspliced: np.ndarray | None = None,
    ) -> Iterator[tuple[slice, torch.Tensor]]:
        """:meth:`velocity_samples` one cell chunk at a time: (cells, (S, n, G)) pairs, so that
        memory holds one chunk of draws (see :func:`core.posterior.velocity_sample_chunks`)."""
        return velocity_sample_chunks(
            self.module, *self._tensors(spliced, unspliced), n_samples, generator=self._generator(3)
        )

    def expression_fit(
        self,
        spliced: np.ndarray,
        unspliced: np.ndarray,
        n_samples: int = 10,
        mode: str = "rao-blackwell",
    ) -> tuple[np.ndarray, np.ndarray]:
        """Posterior predictive means (fit_s, fit_u), (N, G), for any moments (e.g. permuted)."""
        return expression_fit(
            self.module, *self._tensors(spliced, unspliced), n_samples, mode, self._generator(4)
        )

    @torch.no_grad()
    def latent(self) -> np.ndarray:
        """q(z) mean of every training cell, (N, L)."""
        self.module.eval()
        mean, _ = self.module.encode(*self._tensors(None, None))
        return mean.cpu().numpy()

    @torch.no_grad()
    def rates(self) -> dict[str, np.ndarray]:
        """Unscaled model rates (G,): alpha, beta, gamma, alpha_1, lambda_alpha, t_switch."""
        return {k: v.cpu().numpy() for k, v in self.module.rates()._asdict().items()}
