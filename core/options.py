"""Names of the fit options that are choices, importable without torch (the web process
validates fit requests with them)."""

#: Estimators of the posterior summaries (see :mod:`core.posterior`); the first is the default.
POSTERIOR_MODES = ("rao-blackwell", "sample", "mean")
#: How the state weights π enter the training objective (see ``core.model.VeloVAE.forward``);
#: the first is the default, "sampled" is the reference veloVI's.
PI_ESTIMATORS = ("expected", "sampled")
#: When training stops: "velocity" (the velocity field has converged, see
#: :mod:`core.convergence`, or the reference's ELBO patience fires) or "elbo" (the reference
#: veloVI's rule alone); the first is the default.
STOPPING_RULES = ("velocity", "elbo")
