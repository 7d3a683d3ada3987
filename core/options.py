"""Names of the fit options that are choices, importable without torch (the web process
validates fit requests with them)."""

#: Estimators of the posterior summaries (see :mod:`core.posterior`); the first is the default.
POSTERIOR_MODES = ("rao-blackwell", "sample", "mean")
#: How the state weights π enter the training objective (see ``core.model.VeloVAE.forward``);
#: the first is the default: "sampled", the reference veloVI's (its uncertainty depends on it);
#: "expected" trains faster but concentrates the state weights (bench/RESULTS.md, "Uncertainty").
PI_ESTIMATORS = ("sampled", "expected")
#: Latent time per cell and gene from the state weights (the reference's ``time_statistic``):
#: "mean", the reference's default π-weighted mean, or "max", the time of the most probable
#: state (the reference's other choice: with its diffuse state weights the mean blends the
#: induction and repression times, and "max" recovers a simulation's time better,
#: bench/RESULTS.md "Uncertainty"); the repression steady state has time 0 in both, as the
#: reference. The per-gene scaling of the velocity (t_max / latest time) follows it.
TIME_STATISTICS = ("mean", "max")
#: When training stops: "velocity" (the velocity field has converged, see
#: :mod:`core.convergence`, or the reference's ELBO patience fires) or "elbo" (the reference
#: veloVI's rule alone); the first is the default.
STOPPING_RULES = ("velocity", "elbo")
#: The splicing loss L_splice of SplicedVAE (see ``core.splicing_vae.splice_loss``), the paper's
#: three: the first is the default, the one that validated best on held-out pancreas cells
#: (bench/RESULTS.md, "Without spliced/unspliced").
SPLICE_LOSSES = ("weighted_mse", "mse", "binomial")
#: Where a fit runs: "auto" (CUDA when torch sees a GPU, else the CPU), "cpu" or "cuda".
DEVICES = ("auto", "cpu", "cuda")
#: The scVelo baseline veloVI is compared with (see :mod:`core.baseline`): "steady_state" (the
#: default) or "dynamical" (scVelo's EM: slow).
BASELINES = ("steady_state", "dynamical")
#: The fit's stages in the order the pipeline runs them (``uns['velodash']['timings']`` keys;
#: the results file stores them in alphabetical order).
STAGES = (
    "splicing",
    "preprocess",
    "train",
    "posterior",
    "graph",
    "uncertainty",
    "coherence",
    "permutation",
    "baseline",
    "write",
)
#: Where each stage ends on the overall progress bar, in `STAGES` order (training is filled
#: epoch by epoch); the shares follow the stages' typical run times. "splicing" (spliced/unspliced
#: predicted from a reference, only then) has no share: its messages count its epochs.
STAGE_ENDS = (0.0, 0.15, 0.70, 0.75, 0.78, 0.92, 0.93, 0.96, 0.99, 1.0)
#: stage -> (start, end) of its share of the progress bar.
STAGE_SPAN = dict(zip(STAGES, zip((0.0, *STAGE_ENDS[:-1]), STAGE_ENDS, strict=True), strict=True))


def in_pipeline_order(timings: dict[str, float]) -> list[tuple[str, float]]:
    """(stage, seconds) in the order the fit ran them (`STAGES`; unknown names last, as given)."""
    rank = {name: i for i, name in enumerate(STAGES)}
    return sorted(timings.items(), key=lambda item: rank.get(item[0], len(rank)))
