"""Posterior pass: invariants of the summaries, and the scVelo round trip of the results slots
(velocity graph, embedding, and the phase-portrait curve scVelo draws from our fit_* values)."""

from __future__ import annotations

import warnings

import anndata as ad
import matplotlib
import numpy as np
import pytest
import scanpy as sc
import scvelo as scv
import torch

from core import posterior
from core.kinetics import trajectory
from core.posterior import add_posterior_to_adata
from core.row_spill import RowSpill
from core.train import TrainConfig
from core.velovi import ModelConfig, VeloVI

matplotlib.use("Agg")


@pytest.fixture(scope="module")
def fitted():
    warnings.filterwarnings("ignore")
    adata = scv.datasets.simulation(
        n_obs=240, n_vars=10, t_max=20, switches=[0.4, 0.6, 0.8], random_seed=1
    )
    # exact kNN with Gaussian weights: no numba/pynndescent compilation in the test
    sc.pp.pca(adata, n_comps=5)
    sc.pp.neighbors(adata, n_neighbors=15, use_rep="X_pca", method="gauss", transformer="sklearn")
    scv.pp.moments(adata, n_pcs=None, n_neighbors=None)
    for key in ("Ms", "Mu"):
        x = adata.layers[key]
        adata.layers[key] = ((x - x.min(0)) / (x.max(0) - x.min(0))).astype(np.float32)
    adata.obsm["X_umap"] = adata.obsm["X_pca"][:, :2]
    model = VeloVI(adata.layers["Ms"], adata.layers["Mu"], ModelConfig(n_hidden=64), "cpu", seed=0)
    model.train(TrainConfig(max_epochs=25))
    return adata, model, model.posterior(n_samples=8)


def test_summaries_are_consistent(fitted):
    adata, model, post = fitted
    n, g = adata.shape
    assert post.velocity.shape == post.velocity_var.shape == post.fit_t.shape == (n, g)
    assert post.states.shape == (4, n, g) and post.latent_z.shape == (n, 10)
    np.testing.assert_allclose(post.states.sum(0), 1.0, rtol=1e-5)
    # per-gene rescaling puts every gene's latest cell at t = 20, and keeps rate × time
    np.testing.assert_allclose(post.fit_t.max(0), 20.0, rtol=1e-5)
    raw = model.rates()
    np.testing.assert_allclose(post.beta * post.t_switch, raw["beta"] * raw["t_switch"], rtol=1e-5)
    # clipped like the reference: Ms + v·scaling ≥ 0
    assert np.all(adata.layers["Ms"] + post.velocity * post.scaling >= -1e-6)
    assert post.latent_time.min() == 0.0 and post.latent_time.max() == pytest.approx(1.0)
    assert np.all(post.velocity_var >= 0) and np.isfinite(post.likelihood).all()
    # fit_mse is summed batch by batch: it must equal the error of the pass's own fit_s/fit_u
    Ms, Mu = adata.layers["Ms"].astype(np.float64), adata.layers["Mu"].astype(np.float64)
    np.testing.assert_allclose(
        post.fit_mse, ((post.fit_s - Ms) ** 2 + (post.fit_u - Mu) ** 2).mean(0), rtol=1e-4
    )
    fit_s, fit_u = model.expression_fit(adata.layers["Ms"], adata.layers["Mu"], n_samples=8)
    np.testing.assert_allclose(
        post.fit_mse,
        ((fit_s - adata.layers["Ms"]) ** 2 + (fit_u - adata.layers["Mu"]) ** 2).mean(0),
        rtol=0.2,
    )


def test_mean_mode_is_deterministic_and_samples_scatter_around_it(fitted):
    _, model, post = fitted
    m1, m2 = model.posterior(mode="mean"), model.posterior(mode="mean")
    np.testing.assert_array_equal(m1.velocity, m2.velocity)
    assert m1.n_samples == 1 and np.all(m1.velocity_var == 0)
    samples = model.velocity_samples(64)
    assert samples.shape == (64, *post.velocity.shape)
    # the draws are in model units: × the posterior's per-gene scaling gives its velocity's units
    rescaled = samples.mean(0).numpy() / post.scaling.astype(np.float32)
    # Independent draws (64 vs 8) of a 25-epoch model: measured r = 0.71; unrelated fields give ~0.
    corr = np.corrcoef(rescaled.ravel(), post.velocity.ravel())[0, 1]
    assert corr > 0.5
    # per gene the same field up to that scaling: the slope of draws on velocity is the scaling
    gene = int(np.argmax(post.velocity.std(0)))
    slope = np.polyfit(post.velocity[:, gene], samples.mean(0).numpy()[:, gene], 1)[0]
    assert slope == pytest.approx(post.scaling[gene], rel=0.3)


def test_expression_fit_on_permuted_data(fitted):
    adata, model, _ = fitted
    rng = np.random.default_rng(0)
    s, u = adata.layers["Ms"], adata.layers["Mu"]
    perm_s, perm_u = rng.permuted(s, axis=0), rng.permuted(u, axis=0)
    fit_s, fit_u = model.expression_fit(perm_s, perm_u, n_samples=4)
    assert fit_s.shape == fit_u.shape == s.shape and np.isfinite(fit_s).all()
    err_perm = np.abs(fit_s - perm_s).mean() + np.abs(fit_u - perm_u).mean()
    fit_s0, fit_u0 = model.expression_fit(s, u, n_samples=4)
    assert err_perm > np.abs(fit_s0 - s).mean() + np.abs(fit_u0 - u).mean()
    with pytest.raises(ValueError, match="genes"):
        model.expression_fit(s[:, :3], u[:, :3])


def test_scvelo_round_trip(fitted):
    adata, _, post = fitted
    adata = adata.copy()
    add_posterior_to_adata(adata, post)
    for key in ("velocity", "velocity_var", "fit_t", "fit_s", "fit_u", "state_assignment"):
        assert key in adata.layers
    # the state assignment is the most probable of the four mean state probabilities
    np.testing.assert_array_equal(adata.layers["state_assignment"], post.states.argmax(0))
    assert adata.layers["state_assignment"].dtype == np.int8
    assert adata.uns["velocity_params"]["mode"] == "velovi"
    scv.tl.velocity_graph(adata, xkey="Ms", n_jobs=1, show_progress_bar=False)
    assert adata.uns["velocity_graph"].shape == (adata.n_obs, adata.n_obs)
    scv.tl.velocity_embedding(adata, basis="umap")
    assert np.isfinite(adata.obsm["velocity_umap"]).all()
    # scVelo draws the fitted curve from our fit_* values with its own solver; it must lie on
    # the curve core.kinetics.trajectory gives for the same gene.
    gene = adata.var_names[0]
    ax = scv.pl.scatter(adata, basis=gene, show=False, use_raw=False)
    curve = max(ax.get_lines(), key=lambda line: len(line.get_xdata()))
    s_drawn, u_drawn = np.asarray(curve.get_xdata()), np.asarray(curve.get_ydata())
    var = adata.var.loc[gene]
    # scVelo draws induction up to the switch even when it lies past the latest cell (t = 20)
    end = max(20.0, var.fit_t_)
    _, u_ours, s_ours = trajectory(
        var.fit_alpha, var.fit_beta, var.fit_gamma, var.fit_t_, end, n_points=20000
    )
    dist = np.hypot(s_drawn[:, None] - s_ours[None], u_drawn[:, None] - u_ours[None]).min(1)
    assert dist.max() < 1e-2 * max(s_ours.max(), u_ours.max())
    matplotlib.pyplot.close("all")


def test_add_posterior_rejects_mismatched_adata(fitted):
    _, _, post = fitted
    with pytest.raises(ValueError, match="fitted on"):
        add_posterior_to_adata(ad.AnnData(np.zeros((3, 2), dtype=np.float32)), post)


def test_velocity_samples_reproducible(fitted):
    _, model, _ = fitted
    torch.testing.assert_close(model.velocity_samples(3), model.velocity_samples(3))


def test_posterior_batches_write_their_own_rows(fitted, monkeypatch):
    """Batches write into preallocated outputs and sum per-gene errors batch by batch: with
    z = E[z] (no draws) many small batches, drawn in parallel threads, give the one-batch pass."""
    _, model, _ = fitted
    whole = model.posterior(mode="mean")
    monkeypatch.setitem(posterior._ELEMENT_BUDGET, "cpu", 37 * 4 * model.module.n_genes)
    batched = model.posterior(mode="mean")  # 37 cells per batch: 7 batches, the last partial
    for key in ("velocity", "fit_t", "fit_s", "fit_u", "states", "latent_z", "latent_time"):
        np.testing.assert_allclose(getattr(batched, key), getattr(whole, key), rtol=1e-5, atol=1e-6)
    for key in ("fit_mse", "likelihood", "scaling"):
        np.testing.assert_allclose(getattr(batched, key), getattr(whole, key), rtol=1e-5)


def test_a_spilled_pass_writes_the_same_layers_to_disk(fitted, tmp_path, monkeypatch):
    """With a spill, the (N, G) summaries but the velocity go to disk batch by batch (several
    batches, drawn in threads) and are None in the result; read back they equal the kept
    pass's, and so does everything else (same seed, same draws)."""
    adata, model, _ = fitted
    monkeypatch.setitem(posterior._ELEMENT_BUDGET, "cpu", 37 * 4 * 5 * model.module.n_genes)
    kept = model.posterior(n_samples=5)
    spill = RowSpill(tmp_path / "spill", adata.shape)
    spilled = model.posterior(n_samples=5, spill=spill)
    assert sorted(spill.names) == sorted(posterior.SPILLED_LAYERS)
    for key in ("velocity_var", "fit_t", "fit_s", "fit_u", "states"):
        assert getattr(spilled, key) is None, key
    layers = {"velocity_var": kept.velocity_var, "fit_t": kept.fit_t}
    layers |= {"fit_s": kept.fit_s, "fit_u": kept.fit_u}
    layers["state_assignment"] = posterior.state_assignment(kept.states)
    for key, expected in layers.items():
        np.testing.assert_array_equal(spill.load(key), expected, err_msg=key)
    for key in ("velocity", "latent_z", "latent_time", "fit_mse", "likelihood", "scaling"):
        np.testing.assert_array_equal(getattr(spilled, key), getattr(kept, key), err_msg=key)
    target = ad.AnnData(np.zeros(adata.shape, dtype=np.float32))
    add_posterior_to_adata(target, spilled)
    assert set(target.layers) == {"velocity"}


def test_row_spill_takes_blocks_in_order_and_reads_whole_layers(tmp_path):
    spill = RowSpill(tmp_path / "s", (5, 3))
    values = np.arange(15, dtype=np.float32).reshape(5, 3)
    spill.append("a", slice(0, 2), values[:2])
    with pytest.raises(ValueError, match="2 of 5 rows"):
        spill.load("a")
    with pytest.raises(ValueError, match="in order"):
        spill.append("a", slice(3, 5), values[3:])
    spill.append("a", slice(2, 5), values[2:].astype(np.float64))  # in the first block's dtype
    np.testing.assert_array_equal(spill.load("a"), values)
    assert spill.load("a").dtype == np.float32 and spill.names == ["a"]
    codes = (values % 4).astype(np.int8)  # a state assignment stays one byte per entry
    spill.append("codes", slice(0, 5), codes)
    np.testing.assert_array_equal(spill.load("codes"), codes)
    assert (tmp_path / "s" / "codes.i1").stat().st_size == codes.size
    spill.remove()
    assert not (tmp_path / "s").exists() and spill.names == []


def test_chunk_parallel_draws_equal_serial_draws_and_differ_between_chunks(fitted):
    _, model, _ = fitted
    args = (model.module, *model._tensors(None, None), 4)

    def samples(workers: int) -> tuple[list[slice], torch.Tensor]:
        chunks = list(
            posterior.velocity_sample_chunks(
                *args, cells_per_chunk=30, generator=model._generator(3), workers=workers
            )
        )
        return [c for c, _ in chunks], torch.cat([x for _, x in chunks], dim=1)

    cells, serial = samples(1)
    parallel_cells, parallel = samples(3)
    assert cells == parallel_cells == [slice(i, min(i + 30, 240)) for i in range(0, 240, 30)]
    assert torch.equal(serial, parallel)  # same seed, same draws, whatever the thread count
    # every chunk has its own random stream, fixed by the query's seed and the chunk's index
    streams = [posterior._chunk_generator(model._generator(3), i) for i in (0, 1, 0)]
    first = [torch.rand(5, generator=g) for g in streams]
    assert not torch.equal(first[0], first[1]) and torch.equal(first[0], first[2])
    assert serial.std(0).mean() > 0  # and the S draws of a cell scatter


def test_rao_blackwell_moments_equal_monte_carlo_over_the_state_weights(fitted):
    """At a fixed z, E[v | z] and Var[v | z] of the Rao–Blackwellised estimator equal the mean
    and variance of v over many Dirichlet draws of π (torch.distributions as the oracle)."""
    from core.dirichlet import STATE_AXIS
    from core.posterior import draw, state_velocities, state_weights

    adata, model, _ = fitted
    s = torch.from_numpy(adata.layers["Ms"][:6])
    u = torch.from_numpy(adata.layers["Mu"][:6])
    with torch.no_grad():
        d = draw(model.module, s, u, 1, "mean")
        per_state = torch.stack(state_velocities(d), dim=STATE_AXIS)[0]  # (B, 2, G)
        p = state_weights(d, "rao-blackwell")[0]
        mean = (p[:, ::2] * per_state).sum(STATE_AXIS)
        second = (p[:, ::2] * per_state.square()).sum(STATE_AXIS)
        var = (second - mean.square()) / (d.concentration[0].sum(STATE_AXIS) + 1)
        conc = d.concentration[0].transpose(1, 2).double()  # (B, G, 4)
        pi = torch.distributions.Dirichlet(conc).sample((200_000,)).transpose(-1, -2).float()
        v = (pi[:, :, ::2] * per_state).sum(STATE_AXIS)
    scale = v.std(0).mean()
    torch.testing.assert_close(mean, v.mean(0), atol=0.02 * scale, rtol=0.0)
    torch.testing.assert_close(var, v.var(0), atol=0.02 * scale**2, rtol=0.02)


def test_rao_blackwell_and_sampled_estimators_agree(fitted):
    _, model, _ = fitted
    rb = model.posterior(n_samples=50)
    mc = model.posterior(n_samples=2000, mode="sample")
    assert rb.mode == "rao-blackwell" and mc.mode == "sample"
    # same expectations, different Monte-Carlo noise: the reference's estimator trains diffuse
    # state weights, so the sampled mean needs many draws (measured r = 0.986–0.999 at 2,000
    # on this 25-epoch fit; 0.92–0.995 at 200)
    for key in ("velocity", "fit_t", "fit_s", "states"):
        ours, theirs = getattr(rb, key).ravel(), getattr(mc, key).ravel()
        assert np.corrcoef(ours, theirs)[0, 1] > 0.975, key
    ratio = np.median(rb.velocity_var / np.maximum(mc.velocity_var, 1e-30))
    assert 0.8 < ratio < 1.25
    model.posterior(n_samples=8)  # leave the module-level scaling as the fixture made it


def test_velocity_draws_have_the_law_of_the_reference_dirichlet_draws(fitted):
    """The uncertainty's velocity draws (3 log-gammas, the boost reusing the acceptance
    uniform, a softmax) follow the law of the reference's get_velocity draws: z ~ q(z | x), then
    π ~ Dirichlet over all four states with torch.distributions (torch's own gamma sampler) and
    v = π_ind·v_ind + π_rep·v_rep, clipped at −s. Per cell and gene, two-sample KS tests of
    2,000 draws each, and the per-cell intrinsic uncertainty, agree within Monte-Carlo noise."""
    import scipy.stats as st

    from core.uncertainty import intrinsic_uncertainty

    _, model, _ = fitted
    s, u = model._tensors(None, None)
    n_draws = 2000
    ours = posterior.velocity_samples(model.module, s, u, n_draws, generator=model._generator(5))
    torch.manual_seed(5)
    with torch.no_grad():
        d = posterior.draw(model.module, s, u, n_draws, "sample")
        conc = d.concentration.transpose(-1, -2)  # (S, N, G, 4)
        pi = torch.distributions.Dirichlet(conc).sample().transpose(-1, -2)
        v_ind, v_rep = posterior.state_velocities(d)
        theirs = torch.maximum(pi[..., 0, :] * v_ind + pi[..., 2, :] * v_rep, -s)
    a = ours.reshape(n_draws, -1).T.numpy()
    b = theirs.reshape(n_draws, -1).T.numpy()
    p_values = np.array([st.ks_2samp(x, y).pvalue for x, y in zip(a, b, strict=True)])
    # under the same law p-values are uniform: ~1 % below 0.01 (2,400 pairs)
    assert np.mean(p_values < 0.01) < 0.03
    assert np.mean(p_values < 0.1) < 0.15
    ours_cv = intrinsic_uncertainty(ours)["cosine_variance"].to_numpy()
    theirs_cv = intrinsic_uncertainty(theirs)["cosine_variance"].to_numpy()
    # per cell, as close as two seeds of either sampler (median |log ratio| 0.028–0.029)
    assert abs(np.median(ours_cv / theirs_cv) - 1.0) < 0.02
    assert np.median(np.abs(np.log(ours_cv / theirs_cv))) < 0.04
